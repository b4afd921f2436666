//! Kubeconfig files pointing at a running emulator.

/// What goes into a generated kubeconfig.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KubeconfigOptions {
    /// Bearer token of the user; `None` writes a user without credentials (anonymous).
    pub token: Option<String>,
    /// Default namespace of the context.
    pub namespace: Option<String>,
    /// Name of the cluster, context and user entries (default `kube-sim`).
    pub name: Option<String>,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Renders a kubeconfig (YAML) for `server`.
pub fn render(server: &str, opts: &KubeconfigOptions) -> String {
    let name = quoted(opts.name.as_deref().unwrap_or("kube-sim"));
    let user = match &opts.token {
        Some(t) => format!("  user:\n    token: {}\n", quoted(t)),
        None => "  user: {}\n".to_string(),
    };
    let namespace = opts
        .namespace
        .as_deref()
        .map(|n| format!("    namespace: {}\n", quoted(n)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n{namespace}current-context: {name}\nusers:\n- name: {name}\n{user}preferences: {{}}\n",
        quoted(server)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_token_and_namespace() {
        let y = render(
            "http://127.0.0.1:1234",
            &KubeconfigOptions {
                token: Some("t0".into()),
                namespace: Some("ml".into()),
                name: None,
            },
        );
        assert!(y.contains("    server: \"http://127.0.0.1:1234\"\n"));
        assert!(y.contains("  user:\n    token: \"t0\"\n"));
        assert!(y.contains("    namespace: \"ml\"\n"));
        assert!(y.contains("current-context: \"kube-sim\"\n"));
    }

    #[test]
    fn anonymous_user_has_no_credentials() {
        let y = render("http://x", &KubeconfigOptions::default());
        assert!(y.contains("  user: {}\n"));
        assert!(!y.contains("token"));
    }
}
