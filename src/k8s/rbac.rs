//! RBAC diagnostics: the permission a 403 says is missing, and the rule that would grant it.
//!
//! The apiserver's Forbidden message has a fixed shape (`forbiddenMessage` in apiserver's
//! authorization filters):
//! `deployments.apps "trainer" is forbidden: User "bob" cannot patch resource "deployments" in API
//! group "apps" in the namespace "ml"` (or `... at the cluster scope`), optionally followed by the
//! authorizer's reason. Pure text in, values out.

use serde::{Deserialize, Serialize};

/// A denied request, parsed from a Forbidden message, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbacDenial {
    /// The authenticated user the server named (`system:serviceaccount:ns:sa` for a service account).
    pub user: String,
    /// Lowercase verb (`get`, `patch`, ...).
    pub verb: String,
    /// Resource, with its subresource if any (`deployments`, `pods/log`).
    pub resource: String,
    /// API group; `""` is the core group.
    pub api_group: String,
    /// Namespace of the request, null at the cluster scope.
    pub namespace: Option<String>,
    /// Name of the object, when the message names one.
    pub name: Option<String>,
    /// `namespaced` or `cluster`.
    pub scope: String,
    pub suggested_rule: SuggestedRule,
    /// One English sentence: what to grant, to whom, and how to bind it.
    pub hint: String,
    /// kubectl commands that create the Role (or ClusterRole) and its binding.
    pub kubectl: Vec<String>,
}

/// A PolicyRule that grants the denied request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuggestedRule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    /// The object the request named; the rule may be narrowed to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
}

/// A string as one shell word: as is when it is plainly safe, else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'@')
        });
    if plain {
        s.to_string()
    } else {
        crate::plan::shell_quote(s)
    }
}

/// The text after `prefix` up to the next `"`, and the rest after that quote.
fn quoted_after<'a>(s: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let at = s.find(prefix)? + prefix.len();
    let rest = &s[at..];
    let end = rest.find('"')?;
    Some((&rest[..end], &rest[end + 1..]))
}

impl RbacDenial {
    /// Parses a Forbidden message; None if it does not name a user and a resource permission
    /// (for example `cannot get path "/api"`).
    pub fn parse(message: &str) -> Option<RbacDenial> {
        let (user, rest) = quoted_after(message, "User \"")?;
        let rest = rest.strip_prefix(" cannot ")?;
        let (verb, rest) = rest.split_once(' ')?;
        let (resource, rest) = quoted_after(rest, "resource \"")?;
        let (api_group, rest) = quoted_after(rest, "in API group \"")?;
        let rest = rest.trim_start();
        let namespace = if rest.starts_with("in the namespace \"") {
            Some(quoted_after(rest, "in the namespace \"")?.0.to_string())
        } else if rest.starts_with("at the cluster scope") {
            None
        } else {
            return None;
        };
        // `<resource>.<group> "<name>" is forbidden:` names the object.
        let name = message
            .split_once(" is forbidden:")
            .and_then(|(head, _)| {
                let head = head.trim_end();
                let inner = head.strip_suffix('"')?;
                let start = inner.rfind('"')?;
                Some(inner[start + 1..].to_string())
            })
            .filter(|n| !n.is_empty());
        Some(RbacDenial::new(
            user,
            &verb.to_ascii_lowercase(),
            resource,
            api_group,
            namespace.as_deref(),
            name.as_deref(),
        ))
    }

    /// The denial of `verb` on `resource` for `user`, with the rule, hint and commands that fix it.
    pub fn new(
        user: &str,
        verb: &str,
        resource: &str,
        api_group: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> RbacDenial {
        let suggested_rule = SuggestedRule {
            api_groups: vec![api_group.to_string()],
            resources: vec![resource.to_string()],
            verbs: vec![verb.to_string()],
            resource_names: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
        };
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let (role, binding, place) = match namespace {
            Some(ns) => ("Role", "RoleBinding", format!(" in namespace {ns:?}")),
            None => ("ClusterRole", "ClusterRoleBinding", String::new()),
        };
        let narrow = match name {
            Some(n) => format!(" (add resourceNames=[{n:?}] to allow only this object)"),
            None => String::new(),
        };
        let hint = format!(
            "Grant a {role}{place} with the rule apiGroups={}, resources={}, verbs={}{narrow}, then bind it to user {user:?} with a {binding}; docs/rbac.yaml has a complete Role for ModeKeeper.",
            list(&suggested_rule.api_groups),
            list(&suggested_rule.resources),
            list(&suggested_rule.verbs),
        );
        let qualified = if api_group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{api_group}")
        };
        let subject = match user
            .strip_prefix("system:serviceaccount:")
            .and_then(|s| s.split_once(':'))
        {
            Some((ns, sa)) => format!("--serviceaccount={ns}:{sa}"),
            None => format!("--user={}", shell_word(user)),
        };
        let ns_flag = namespace
            .map(|ns| format!(" -n {}", shell_word(ns)))
            .unwrap_or_default();
        let kind_cmd = if namespace.is_some() {
            "role"
        } else {
            "clusterrole"
        };
        let names = name
            .map(|n| format!(" --resource-name={}", shell_word(n)))
            .unwrap_or_default();
        let kubectl = vec![
            format!(
                "kubectl create {kind_cmd} modekeeper-{verb}{ns_flag} --verb={verb} --resource={qualified}{names}"
            ),
            format!(
                "kubectl create {kind_cmd}binding modekeeper-{verb}{ns_flag} --{kind_cmd}=modekeeper-{verb} {subject}"
            ),
        ];
        RbacDenial {
            user: user.to_string(),
            verb: verb.to_string(),
            resource: resource.to_string(),
            api_group: api_group.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            scope: if namespace.is_some() {
                "namespaced"
            } else {
                "cluster"
            }
            .to_string(),
            suggested_rule,
            hint,
            kubectl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_denial_with_a_name() {
        let r = RbacDenial::parse(
            "deployments.apps \"trainer\" is forbidden: User \"bob\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"ml\"",
        )
        .unwrap();
        assert_eq!(r.user, "bob");
        assert_eq!(r.verb, "patch");
        assert_eq!(r.resource, "deployments");
        assert_eq!(r.api_group, "apps");
        assert_eq!(r.namespace.as_deref(), Some("ml"));
        assert_eq!(r.name.as_deref(), Some("trainer"));
        assert_eq!(r.scope, "namespaced");
        assert_eq!(r.suggested_rule.resource_names, ["trainer"]);
        assert_eq!(
            r.hint,
            "Grant a Role in namespace \"ml\" with the rule apiGroups=[\"apps\"], resources=[\"deployments\"], verbs=[\"patch\"] (add resourceNames=[\"trainer\"] to allow only this object), then bind it to user \"bob\" with a RoleBinding; docs/rbac.yaml has a complete Role for ModeKeeper."
        );
        assert_eq!(
            r.kubectl,
            [
                "kubectl create role modekeeper-patch -n ml --verb=patch --resource=deployments.apps --resource-name=trainer",
                "kubectl create rolebinding modekeeper-patch -n ml --role=modekeeper-patch --user=bob"
            ]
        );
    }

    #[test]
    fn cluster_scope_core_group_and_service_account() {
        let r = RbacDenial::parse(
            "namespaces is forbidden: User \"system:serviceaccount:ci:runner\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"x\" not found",
        )
        .unwrap();
        assert_eq!(r.namespace, None);
        assert_eq!(r.name, None);
        assert_eq!(r.scope, "cluster");
        assert_eq!(r.api_group, "");
        assert!(
            r.hint
                .starts_with("Grant a ClusterRole with the rule apiGroups=[\"\"]")
        );
        assert!(r.hint.contains("ClusterRoleBinding"));
        assert_eq!(
            r.kubectl[1],
            "kubectl create clusterrolebinding modekeeper-list --clusterrole=modekeeper-list --serviceaccount=ci:runner"
        );
    }

    #[test]
    fn other_forbidden_texts_are_not_parsed() {
        assert!(
            RbacDenial::parse("forbidden: User \"system:anonymous\" cannot get path \"/apis\"")
                .is_none()
        );
        assert!(RbacDenial::parse("nothing to see").is_none());
        assert!(
            RbacDenial::parse(
                "User \"a\" cannot get resource \"pods\" in API group \"\" somewhere"
            )
            .is_none()
        );
    }

    #[test]
    fn hostile_user_names_are_quoted_in_commands() {
        let r = RbacDenial::new("a b;$(id)", "get", "pods/log", "", Some("ml"), None);
        assert!(
            r.kubectl[1].ends_with("--user='a b;$(id)'"),
            "{}",
            r.kubectl[1]
        );
        assert_eq!(r.suggested_rule.resources, ["pods/log"]);
    }
}
