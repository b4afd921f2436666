//! Which cluster, as kubectl would pick it: `--kubeconfig` (a `:`-separated list), else `KUBECONFIG`,
//! else `~/.kube/config`, else the in-cluster service account; `--context` over the current context;
//! `-n` over the context's namespace; `--request-timeout` for every call.
//!
//! Files are merged with client-go's rules (the first file to set a value or a named entry wins).
//! Files named with `--kubeconfig` must exist; missing files in `KUBECONFIG` are skipped, as
//! client-go skips them.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::{Deserialize, Serialize};

/// The request timeout when `--request-timeout` is not given.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// kubectl's global flags, as the CLI parsed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `--kubeconfig`: one path or a `:`-separated list.
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    /// `None`: no limit (kubectl's `--request-timeout=0`).
    pub request_timeout: Option<Duration>,
}

impl ConnectOptions {
    /// Options from the CLI's flags: `request_timeout_ms` None means the default, 0 means no limit.
    pub fn from_flags(
        kubeconfig: Option<&str>,
        context: Option<&str>,
        namespace: Option<&str>,
        request_timeout_ms: Option<u64>,
    ) -> ConnectOptions {
        ConnectOptions {
            kubeconfig: kubeconfig.map(str::to_string),
            context: context.map(str::to_string),
            namespace: namespace.map(str::to_string),
            request_timeout: match request_timeout_ms {
                None => Some(DEFAULT_REQUEST_TIMEOUT),
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
            },
        }
    }
}

/// Where the connection settings came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConfigSource {
    /// Kubeconfig files, in merge order.
    Kubeconfig { paths: Vec<PathBuf> },
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`).
    InCluster,
}

/// Who talks to which server: recorded in every report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The kubeconfig context; null in-cluster.
    pub context: Option<String>,
    /// The kubeconfig cluster entry; null in-cluster.
    pub cluster: Option<String>,
    /// The API server URL.
    pub server: String,
    /// The kubeconfig user entry (not necessarily the name the server authenticates; a 403 names that).
    pub user: Option<String>,
    /// The default namespace: `-n`, else the context's, else `default`.
    pub namespace: String,
    pub source: ConfigSource,
}

/// The connection settings could not be worked out. An input error: the user must fix a flag or a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

fn config_error(message: impl Into<String>) -> ConfigError {
    ConfigError {
        message: message.into(),
    }
}

/// The kubeconfig files to merge, in order.
fn kubeconfig_paths(opts: &ConnectOptions) -> Result<Vec<PathBuf>, ConfigError> {
    if let Some(list) = &opts.kubeconfig {
        let paths: Vec<PathBuf> = std::env::split_paths(list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if paths.is_empty() {
            return Err(config_error("--kubeconfig: no path given"));
        }
        for p in &paths {
            if !p.is_file() {
                return Err(config_error(format!(
                    "--kubeconfig: {}: no such file",
                    p.display()
                )));
            }
        }
        return Ok(paths);
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let named: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !named.is_empty() {
            let existing: Vec<PathBuf> = named.iter().filter(|p| p.is_file()).cloned().collect();
            if existing.is_empty() {
                return Err(config_error(format!(
                    "KUBECONFIG names no existing file ({})",
                    named
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            return Ok(existing);
        }
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    Ok(home
        .map(|h| h.join(".kube").join("config"))
        .filter(|p| p.is_file())
        .into_iter()
        .collect())
}

/// A kubeconfig larger than this is not one (kubeconfigs with hundreds of contexts stay under 1 MiB).
pub const MAX_KUBECONFIG_BYTES: u64 = 16 * 1024 * 1024;

fn read_merged(paths: &[PathBuf]) -> Result<Kubeconfig, ConfigError> {
    paths.iter().try_fold(Kubeconfig::default(), |merged, p| {
        // kube-rs reads the file itself (it also makes the file's relative paths absolute); check
        // first, without blocking, that it is a regular file of a sane size.
        crate::fsio::open_regular(p)
            .and_then(|f| match f.metadata() {
                Ok(m) if m.len() > MAX_KUBECONFIG_BYTES => Err(crate::fsio::ReadError::TooLarge {
                    limit: MAX_KUBECONFIG_BYTES,
                }),
                Ok(_) => Ok(()),
                Err(e) => Err(crate::fsio::ReadError::Read(e)),
            })
            .map_err(|e| config_error(format!("kubeconfig {}: {e}", p.display())))?;
        let next = Kubeconfig::read_from(p)
            .map_err(|e| config_error(format!("kubeconfig {}: {e}", p.display())))?;
        merged
            .merge(next)
            .map_err(|e| config_error(format!("kubeconfig {}: {e}", p.display())))
    })
}

/// Works out the kube-rs configuration and the identity it stands for. Async because kube-rs may run
/// an exec credential plugin while loading.
pub async fn load(opts: &ConnectOptions) -> Result<(kube::Config, ClusterIdentity), ConfigError> {
    let paths = kubeconfig_paths(opts)?;
    if paths.is_empty() {
        return in_cluster(opts);
    }
    let merged = read_merged(&paths)?;
    let context_name = match opts.context.clone().or(merged.current_context.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(config_error(format!(
                "{}: no current context; pass --context ({})",
                shown(&paths),
                available(&merged)
            )));
        }
    };
    let Some(context) = merged
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
    else {
        return Err(config_error(format!(
            "{}: context {context_name:?} not found ({})",
            shown(&paths),
            available(&merged)
        )));
    };
    refuse_ca_with_insecure(&merged, &context.cluster)?;
    let options = KubeConfigOptions {
        context: Some(context_name.clone()),
        cluster: None,
        user: None,
    };
    let mut config = kube::Config::from_custom_kubeconfig(merged, &options)
        .await
        .map_err(|e| config_error(format!("context {context_name:?}: {e}")))?;
    if let Some(ns) = &opts.namespace {
        config.default_namespace = ns.clone();
    }
    apply_timeouts(&mut config, opts.request_timeout);
    let identity = ClusterIdentity {
        context: Some(context_name),
        cluster: Some(context.cluster.clone()),
        server: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
        user: context.user.clone(),
        namespace: config.default_namespace.clone(),
        source: ConfigSource::Kubeconfig { paths },
    };
    Ok((config, identity))
}

/// The namespace commands default to, without contacting a server (no credential plugin runs):
/// `-n`, else the selected context's namespace, else `default`; in a pod, the service account's.
/// `Err` when the kubeconfig cannot be read or the context is not in it.
pub fn default_namespace(opts: &ConnectOptions) -> Result<String, ConfigError> {
    if let Some(ns) = &opts.namespace {
        return Ok(ns.clone());
    }
    let paths = kubeconfig_paths(opts)?;
    if paths.is_empty() {
        return Ok(kube::Config::incluster()
            .map(|c| c.default_namespace)
            .unwrap_or_else(|_| "default".to_string()));
    }
    let merged = read_merged(&paths)?;
    let Some(name) = opts.context.clone().or(merged.current_context.clone()) else {
        return Ok("default".to_string());
    };
    let context = merged.contexts.iter().find(|c| c.name == name);
    match context {
        None if opts.context.is_some() => Err(config_error(format!(
            "{}: context {name:?} not found ({})",
            shown(&paths),
            available(&merged)
        ))),
        None => Ok("default".to_string()),
        Some(c) => Ok(c
            .context
            .as_ref()
            .and_then(|c| c.namespace.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_string())),
    }
}

fn in_cluster(opts: &ConnectOptions) -> Result<(kube::Config, ClusterIdentity), ConfigError> {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        return Err(config_error(
            "no kubeconfig: pass --kubeconfig, set KUBECONFIG or create ~/.kube/config",
        ));
    }
    let mut config = kube::Config::incluster()
        .map_err(|e| config_error(format!("in-cluster configuration: {e}")))?;
    if let Some(ns) = &opts.namespace {
        config.default_namespace = ns.clone();
    }
    apply_timeouts(&mut config, opts.request_timeout);
    let identity = ClusterIdentity {
        context: None,
        cluster: None,
        server: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string(),
        user: None,
        namespace: config.default_namespace.clone(),
        source: ConfigSource::InCluster,
    };
    Ok((config, identity))
}

/// kubectl (client-go) refuses a cluster entry that names a CA and also skips TLS verification:
/// which of the two was meant is unclear, and kube-rs would silently skip verification.
fn refuse_ca_with_insecure(k: &Kubeconfig, cluster_name: &str) -> Result<(), ConfigError> {
    let Some(cluster) = k
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
    else {
        return Ok(());
    };
    let has_ca = cluster
        .certificate_authority
        .as_deref()
        .is_some_and(|s| !s.is_empty())
        || cluster
            .certificate_authority_data
            .as_deref()
            .is_some_and(|s| !s.is_empty());
    if cluster.insecure_skip_tls_verify == Some(true) && has_ca {
        return Err(config_error(format!(
            "cluster {cluster_name:?}: specifying a root certificates file with the insecure flag is not allowed (remove certificate-authority(-data) or insecure-skip-tls-verify)"
        )));
    }
    Ok(())
}

/// kube-rs' own timeouts bound the phases (connect, each read and write); the client also bounds each
/// whole call with the same limit. kube-rs' automatic retries (429/503/504, up to 15 times with
/// backoff) are off: they would spend the request timeout and turn a server that keeps answering 503
/// into a "timeout". Every answer is reported as it came; a verify is re-run, not retried inside.
fn apply_timeouts(config: &mut kube::Config, limit: Option<Duration>) {
    config.connect_timeout = limit;
    config.read_timeout = limit;
    config.write_timeout = limit;
    config.reset_reader_on_write = true;
    config.default_retry = false;
}

fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p: &PathBuf| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

fn available(k: &Kubeconfig) -> String {
    let mut names: Vec<&str> = k.contexts.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    if names.is_empty() {
        "the kubeconfig defines no contexts".into()
    } else {
        format!("contexts: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn kubeconfig(dir: &Path, file: &str, server: &str, ctx: &str, current: bool) -> PathBuf {
        let p = dir.join(file);
        let current = if current {
            format!("current-context: {ctx}\n")
        } else {
            String::new()
        };
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: {ctx}-cluster\n  cluster:\n    server: {server}\ncontexts:\n- name: {ctx}\n  context:\n    cluster: {ctx}-cluster\n    user: {ctx}-user\n    namespace: {ctx}-ns\n{current}users:\n- name: {ctx}-user\n  user:\n    token: t-{ctx}\n"
            ),
        )
        .unwrap();
        p
    }

    /// `load` with `--kubeconfig path` (and `--context`), nothing else.
    fn load_at(
        path: &str,
        context: Option<&str>,
    ) -> Result<(kube::Config, ClusterIdentity), ConfigError> {
        run(load(&ConnectOptions::from_flags(
            Some(path),
            context,
            None,
            None,
        )))
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_list_is_merged_first_wins() {
        let d = tempfile::tempdir().unwrap();
        let a = kubeconfig(d.path(), "a", "https://a.example:6443", "alpha", true);
        let b = kubeconfig(d.path(), "b", "https://b.example:6443", "beta", true);
        let list = format!("{}:{}", a.display(), b.display());
        let opts = ConnectOptions::from_flags(Some(&list), None, None, Some(2500));
        let (config, id) = run(load(&opts)).unwrap();
        assert_eq!(id.context.as_deref(), Some("alpha"));
        assert_eq!(id.server, "https://a.example:6443");
        assert_eq!(id.user.as_deref(), Some("alpha-user"));
        assert_eq!(id.namespace, "alpha-ns");
        assert_eq!(config.read_timeout, Some(Duration::from_millis(2500)));
        assert!(!config.default_retry);
        assert_eq!(
            id.source,
            ConfigSource::Kubeconfig {
                paths: vec![a.clone(), b.clone()]
            }
        );

        // --context picks the second file's context; -n overrides its namespace.
        let opts = ConnectOptions::from_flags(Some(&list), Some("beta"), Some("ml"), Some(0));
        let (config, id) = run(load(&opts)).unwrap();
        assert_eq!(id.server, "https://b.example:6443");
        assert_eq!(id.cluster.as_deref(), Some("beta-cluster"));
        assert_eq!(id.namespace, "ml");
        assert_eq!(config.default_namespace, "ml");
        assert_eq!(config.read_timeout, None, "0 means no limit");
    }

    #[test]
    fn the_default_namespace_is_read_from_the_file_alone() {
        let d = tempfile::tempdir().unwrap();
        // The server does not exist: nothing is contacted.
        let a = kubeconfig(d.path(), "a", "https://a.invalid:6443", "alpha", true);
        let path = a.display().to_string();
        let ns = |context: Option<&str>, namespace: Option<&str>| {
            default_namespace(&ConnectOptions::from_flags(
                Some(&path),
                context,
                namespace,
                None,
            ))
        };
        assert_eq!(ns(None, None).unwrap(), "alpha-ns");
        assert_eq!(ns(None, Some("ml")).unwrap(), "ml");
        assert_eq!(ns(Some("alpha"), None).unwrap(), "alpha-ns");
        let e = ns(Some("nope"), None).unwrap_err();
        assert!(e.message.contains("context \"nope\" not found"), "{e}");
        // No current context and no --context: `default`, as kubectl.
        let b = kubeconfig(d.path(), "b", "https://b.invalid", "beta", false);
        let opts = ConnectOptions::from_flags(Some(b.to_str().unwrap()), None, None, None);
        assert_eq!(default_namespace(&opts).unwrap(), "default");
    }

    #[test]
    fn unknown_context_and_missing_files_are_input_errors() {
        let d = tempfile::tempdir().unwrap();
        let a = kubeconfig(d.path(), "a", "https://a.example", "alpha", false);
        let path = a.display().to_string();
        let e = load_at(&path, None).unwrap_err();
        assert!(
            e.message
                .contains("no current context; pass --context (contexts: alpha)"),
            "{e}"
        );
        let e = load_at(&path, Some("nope")).unwrap_err();
        assert!(e.message.contains("context \"nope\" not found"), "{e}");
        let missing = format!("{path}:{}", d.path().join("missing").display());
        let e = load_at(&missing, None).unwrap_err();
        assert!(e.message.ends_with("missing: no such file"), "{e}");
        std::fs::write(d.path().join("bad"), "clusters: [: not yaml").unwrap();
        let bad = d.path().join("bad").display().to_string();
        let e = load_at(&bad, None).unwrap_err();
        assert!(e.message.starts_with(&format!("kubeconfig {bad}:")), "{e}");
    }

    #[test]
    fn a_ca_with_insecure_skip_tls_verify_is_refused_as_kubectl_refuses_it() {
        let d = tempfile::tempdir().unwrap();
        let base = kubeconfig(d.path(), "a", "https://a.example", "alpha", true);
        let text = std::fs::read_to_string(&base).unwrap();
        for extra in [
            "    insecure-skip-tls-verify: true\n    certificate-authority-data: Zm9v\n",
            "    insecure-skip-tls-verify: true\n    certificate-authority: ca.crt\n",
        ] {
            let p = d.path().join("both");
            std::fs::write(
                &p,
                text.replace(
                    "    server: https://a.example\n",
                    &format!("    server: https://a.example\n{extra}"),
                ),
            )
            .unwrap();
            let path = p.display().to_string();
            let e = load_at(&path, None).unwrap_err();
            assert!(
                e.message.contains("cluster \"alpha-cluster\": specifying a root certificates file with the insecure flag is not allowed"),
                "{e}"
            );
        }
        // Insecure alone is the user's (visible) choice, as with kubectl.
        let p = d.path().join("insecure");
        std::fs::write(
            &p,
            text.replace(
                "    server: https://a.example\n",
                "    server: https://a.example\n    insecure-skip-tls-verify: true\n",
            ),
        )
        .unwrap();
        let path = p.display().to_string();
        assert!(load_at(&path, None).is_ok());
    }

    #[test]
    fn an_oversized_kubeconfig_is_refused_before_it_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("huge");
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(MAX_KUBECONFIG_BYTES + 1).unwrap();
        let path = p.display().to_string();
        let e = load_at(&path, None).unwrap_err();
        assert!(e.message.ends_with("larger than 16 MiB"), "{e}");
    }

    #[test]
    fn default_timeout_applies_when_the_flag_is_absent() {
        let o = ConnectOptions::from_flags(None, None, None, None);
        assert_eq!(o.request_timeout, Some(DEFAULT_REQUEST_TIMEOUT));
    }
}
