//! Bearer-token authentication and RBAC-style authorization.
//!
//! Tokens map to users; each token carries its own rules (the union of the user's bindings).
//! A rule with no `namespaces` applies everywhere (a ClusterRoleBinding); with namespaces it
//! applies only to requests in them (RoleBindings). Authenticated users may always read
//! discovery and create self-reviews, like the default `system:discovery` and
//! `system:basic-user` roles; anonymous users only get `/version` and health checks.

use serde::{Deserialize, Serialize};

use crate::request_info::RequestInfo;
use crate::seed::{AnonymousSeed, TokenSeed};
use crate::status::ApiError;

/// One RBAC policy rule (plus the namespaces its binding covers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Resource names such as `deployments` or `pods/log`; `*` matches all.
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// Empty: every namespace and cluster-scoped resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(|s| s.as_ref().to_string()).collect()
}

impl Rule {
    /// Allow `verbs` on `resources` of `group` in every namespace.
    pub fn allow<V: AsRef<str>, R: AsRef<str>>(
        verbs: impl IntoIterator<Item = V>,
        group: &str,
        resources: impl IntoIterator<Item = R>,
    ) -> Self {
        Rule {
            verbs: strings(verbs),
            api_groups: vec![group.to_string()],
            resources: strings(resources),
            ..Rule::default()
        }
    }

    /// Everything, everywhere (cluster-admin).
    pub fn admin() -> Self {
        Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Rule::default()
        }
    }

    /// Restrict the rule to these namespaces (as a RoleBinding would).
    pub fn in_namespaces<S: AsRef<str>>(mut self, namespaces: impl IntoIterator<Item = S>) -> Self {
        self.namespaces = strings(namespaces);
        self
    }

    pub fn in_namespace(self, namespace: &str) -> Self {
        self.in_namespaces([namespace])
    }

    pub fn named<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.resource_names = strings(names);
        self
    }

    fn has(list: &[String], value: &str) -> bool {
        list.iter().any(|v| v == "*" || v == value)
    }

    /// Whether this rule allows the request described by `info`.
    pub fn allows(&self, info: &RequestInfo) -> bool {
        if !info.is_resource_request {
            return Self::has(&self.verbs, &info.verb)
                && self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || u == &info.path
                        || u.strip_suffix('*')
                            .is_some_and(|p| info.path.starts_with(p))
                });
        }
        if !Self::has(&self.verbs, &info.verb) || !Self::has(&self.api_groups, &info.api_group) {
            return false;
        }
        let resource = info.resource_with_sub();
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == resource
                || (info.subresource.is_empty() && r == &info.resource)
                || r.strip_prefix("*/") == Some(info.subresource.as_str())
                    && !info.subresource.is_empty()
                || r.strip_suffix("/*") == Some(info.resource.as_str())
                    && !info.subresource.is_empty()
        });
        if !resource_ok {
            return false;
        }
        if !self.resource_names.is_empty() && !self.resource_names.contains(&info.name) {
            return false;
        }
        self.namespaces.is_empty()
            || (!info.namespace.is_empty() && self.namespaces.contains(&info.namespace))
    }
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub authenticated: bool,
}

/// Tokens, anonymous access and everyone's rules.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenSeed>,
    pub anonymous: Option<AnonymousSeed>,
}

impl AuthConfig {
    /// Authenticates an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<(User, Vec<Rule>), ApiError> {
        match authorization {
            Some(value) => {
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .ok_or_else(ApiError::unauthorized)?;
                let t = self
                    .tokens
                    .iter()
                    .find(|t| t.token == token)
                    .ok_or_else(ApiError::unauthorized)?;
                let mut groups = t.groups.clone();
                groups.push("system:authenticated".into());
                Ok((
                    User {
                        name: t.user.clone(),
                        groups,
                        authenticated: true,
                    },
                    t.rules.clone(),
                ))
            }
            None => match &self.anonymous {
                Some(a) => Ok((
                    User {
                        name: "system:anonymous".into(),
                        groups: vec!["system:unauthenticated".into()],
                        authenticated: false,
                    },
                    a.rules.clone(),
                )),
                None => Err(ApiError::unauthorized()),
            },
        }
    }

    /// Runs a request as `user` (and `groups`), as the API server's impersonation filter does for
    /// `Impersonate-User`/`Impersonate-Group` (`kubectl --as`/`--as-group`): the caller needs
    /// `impersonate` on that user (`users`, or for a ServiceAccount's name
    /// `system:serviceaccount:NS:NAME`, `serviceaccounts` NAME in NS) and on each group. The
    /// impersonated user has the rules of every token issued to that user name.
    pub fn impersonate(
        &self,
        caller: &User,
        caller_rules: &[Rule],
        user: &str,
        groups: &[String],
    ) -> Result<(User, Vec<Rule>), ApiError> {
        let ask = |resource: &str, namespace: &str, name: &str| RequestInfo {
            is_resource_request: true,
            verb: "impersonate".into(),
            api_version: "v1".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..RequestInfo::default()
        };
        let service_account = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'));
        let mut asks = vec![match service_account {
            Some((ns, name)) => ask("serviceaccounts", ns, name),
            None => ask("users", "", user),
        }];
        asks.extend(groups.iter().map(|g| ask("groups", "", g)));
        for info in &asks {
            authorize(caller, caller_rules, info)?;
        }
        let mut all_groups = groups.to_vec();
        if let Some((ns, _)) = service_account {
            all_groups.push("system:serviceaccounts".into());
            all_groups.push(format!("system:serviceaccounts:{ns}"));
        }
        all_groups.push("system:authenticated".into());
        let rules = self
            .tokens
            .iter()
            .filter(|t| t.user == user)
            .flat_map(|t| t.rules.iter().cloned())
            .collect();
        Ok((
            User {
                name: user.to_string(),
                groups: all_groups,
                authenticated: true,
            },
            rules,
        ))
    }

    pub fn token_mut(&mut self, token: &str) -> Option<&mut TokenSeed> {
        self.tokens.iter_mut().find(|t| t.token == token)
    }
}

const PUBLIC_PATHS: [&str; 4] = ["/version", "/healthz", "/livez", "/readyz"];

fn is_discovery_path(path: &str) -> bool {
    path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/openapi/")
        || path == "/openapi"
}

/// Requests every authenticated user may make without rules.
fn allowed_by_default(user: &User, info: &RequestInfo) -> bool {
    if !info.is_resource_request {
        return PUBLIC_PATHS.contains(&info.path.as_str())
            || (user.authenticated && info.verb == "get" && is_discovery_path(&info.path));
    }
    user.authenticated
        && info.verb == "create"
        && matches!(
            (info.api_group.as_str(), info.resource.as_str()),
            ("authorization.k8s.io", "selfsubjectaccessreviews")
                | ("authorization.k8s.io", "selfsubjectrulesreviews")
                | ("authentication.k8s.io", "selfsubjectreviews")
        )
}

/// Decides a request; `Err` is the 403 Status the apiserver would send.
pub fn authorize(user: &User, rules: &[Rule], info: &RequestInfo) -> Result<(), ApiError> {
    if allowed_by_default(user, info) || rules.iter().any(|r| r.allows(info)) {
        return Ok(());
    }
    Err(forbidden(user, info))
}

/// Whether `rules` allow the request (the SelfSubjectAccessReview answer).
pub fn allowed(user: &User, rules: &[Rule], info: &RequestInfo) -> bool {
    allowed_by_default(user, info) || rules.iter().any(|r| r.allows(info))
}

/// The apiserver's `forbiddenMessage` wrapped by `NewForbidden`.
pub fn forbidden(user: &User, info: &RequestInfo) -> ApiError {
    if !info.is_resource_request {
        return ApiError::forbidden(
            "",
            "",
            "",
            &format!(
                "User {:?} cannot {} path {:?}",
                user.name, info.verb, info.path
            ),
        );
    }
    let scope = if info.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", info.namespace)
    };
    let why = format!(
        "User {:?} cannot {} resource {:?} in API group {:?} {scope}",
        user.name,
        info.verb,
        info.resource_with_sub(),
        info.api_group
    );
    ApiError::forbidden(&info.api_group, &info.resource, &info.name, &why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::request_info;

    fn alice() -> User {
        User {
            name: "alice".into(),
            groups: vec![],
            authenticated: true,
        }
    }

    #[test]
    fn namespaced_rule_only_covers_its_namespace() {
        let rules = [Rule::allow(["get", "patch"], "apps", ["deployments"]).in_namespace("ml")];
        let ok = request_info("PATCH", "/apis/apps/v1/namespaces/ml/deployments/t", "");
        let other = request_info("PATCH", "/apis/apps/v1/namespaces/prod/deployments/t", "");
        let list_all = request_info("GET", "/apis/apps/v1/deployments", "");
        assert!(authorize(&alice(), &rules, &ok).is_ok());
        let e = authorize(&alice(), &rules, &other).unwrap_err();
        assert_eq!(
            e.message,
            "deployments.apps \"t\" is forbidden: User \"alice\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"prod\""
        );
        let e = authorize(&alice(), &rules, &list_all).unwrap_err();
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"alice\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
    }

    #[test]
    fn subresources_need_their_own_rule() {
        let rules = [Rule::allow(["get"], "", ["pods"])];
        let log = request_info("GET", "/api/v1/namespaces/ml/pods/p/log", "");
        let e = authorize(&alice(), &rules, &log).unwrap_err();
        assert!(
            e.message
                .contains("cannot get resource \"pods/log\" in API group \"\""),
            "{}",
            e.message
        );
        assert!(authorize(&alice(), &[Rule::allow(["get"], "", ["pods/log"])], &log).is_ok());
    }

    #[test]
    fn discovery_needs_authentication() {
        let anon = User {
            name: "system:anonymous".into(),
            groups: vec![],
            authenticated: false,
        };
        let apis = request_info("GET", "/apis", "");
        assert!(authorize(&alice(), &[], &apis).is_ok());
        let e = authorize(&anon, &[], &apis).unwrap_err();
        assert_eq!(
            e.message,
            "forbidden: User \"system:anonymous\" cannot get path \"/apis\""
        );
        assert!(authorize(&anon, &[], &request_info("GET", "/version", "")).is_ok());
    }

    #[test]
    fn resource_names_restrict() {
        let rules = [Rule::allow(["patch"], "apps", ["deployments"]).named(["a"])];
        assert!(
            authorize(
                &alice(),
                &rules,
                &request_info("PATCH", "/apis/apps/v1/namespaces/x/deployments/a", "")
            )
            .is_ok()
        );
        assert!(
            authorize(
                &alice(),
                &rules,
                &request_info("PATCH", "/apis/apps/v1/namespaces/x/deployments/b", "")
            )
            .is_err()
        );
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb_and_takes_the_user_s_rules() {
        let sa = "system:serviceaccount:ops:ctl";
        let cfg = AuthConfig {
            tokens: vec![
                TokenSeed {
                    token: "sa".into(),
                    user: sa.into(),
                    groups: vec![],
                    rules: vec![Rule::allow(["get"], "", ["secrets"]).in_namespace("ops")],
                },
                TokenSeed {
                    token: "sa-2".into(),
                    user: sa.into(),
                    groups: vec![],
                    rules: vec![Rule::allow(["list"], "", ["pods"])],
                },
            ],
            anonymous: None,
        };
        let admin = alice();
        let (u, rules) = cfg.impersonate(&admin, &[Rule::admin()], sa, &[]).unwrap();
        assert_eq!(u.name, sa);
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ops",
                "system:authenticated"
            ]
        );
        // The union of its tokens' rules, and nothing of the caller's.
        let get = request_info("GET", "/api/v1/namespaces/ops/secrets/s", "");
        let list = request_info("GET", "/api/v1/pods", "");
        let delete = request_info("DELETE", "/api/v1/namespaces/ops/secrets/s", "");
        assert!(authorize(&u, &rules, &get).is_ok());
        assert!(authorize(&u, &rules, &list).is_ok());
        assert!(authorize(&u, &rules, &delete).is_err());
        // A ServiceAccount is impersonated through `serviceaccounts` in its namespace.
        let only_sa = [Rule::allow(["impersonate"], "", ["serviceaccounts"])
            .in_namespace("ops")
            .named(["ctl"])];
        assert!(cfg.impersonate(&admin, &only_sa, sa, &[]).is_ok());
        let e = cfg.impersonate(&admin, &only_sa, "bob", &[]).unwrap_err();
        assert_eq!(
            e.message,
            "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );
        let e = cfg
            .impersonate(
                &admin,
                &[Rule::allow(["get"], "", ["serviceaccounts"])],
                sa,
                &[],
            )
            .unwrap_err();
        assert_eq!(
            e.message,
            "serviceaccounts \"ctl\" is forbidden: User \"alice\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"ops\""
        );
        // Each group needs its own grant; an unknown user has no rules.
        let e = cfg
            .impersonate(&admin, &only_sa, sa, &["admins".to_string()])
            .unwrap_err();
        assert!(
            e.message.starts_with("groups \"admins\" is forbidden"),
            "{}",
            e.message
        );
        let (nobody, rules) = cfg
            .impersonate(&admin, &[Rule::admin()], "nobody", &[])
            .unwrap();
        assert!(rules.is_empty());
        assert!(authorize(&nobody, &rules, &list).is_err());
    }

    #[test]
    fn tokens_authenticate() {
        let cfg = AuthConfig {
            tokens: vec![TokenSeed {
                token: "t0".into(),
                user: "alice".into(),
                groups: vec!["dev".into()],
                rules: vec![],
            }],
            anonymous: None,
        };
        let (u, _) = cfg.authenticate(Some("Bearer t0")).unwrap();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, ["dev", "system:authenticated"]);
        assert_eq!(cfg.authenticate(Some("Bearer nope")).unwrap_err().code, 401);
        assert_eq!(cfg.authenticate(None).unwrap_err().code, 401);
    }
}
