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
    /// Point at `http://` instead of `https://`. kubectl sends no credentials to plain-HTTP
    /// servers, so such a kubeconfig authenticates as anonymous with kubectl.
    pub plain_http: bool,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Renders a kubeconfig (YAML) for `server`; `ca_pem` (for https servers) becomes
/// `certificate-authority-data`.
pub fn render(server: &str, ca_pem: Option<&str>, opts: &KubeconfigOptions) -> String {
    use base64::Engine;
    let ca = ca_pem
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        })
        .unwrap_or_default();
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
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {}\n{ca}contexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n{namespace}current-context: {name}\nusers:\n- name: {name}\n{user}preferences: {{}}\n",
        quoted(server)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_token_and_namespace() {
        let y = render(
            "https://127.0.0.1:1234",
            Some("PEM"),
            &KubeconfigOptions {
                token: Some("t0".into()),
                namespace: Some("ml".into()),
                ..KubeconfigOptions::default()
            },
        );
        assert!(y.contains("    certificate-authority-data: UEVN\n"));
        assert!(y.contains("    server: \"https://127.0.0.1:1234\"\n"));
        assert!(y.contains("  user:\n    token: \"t0\"\n"));
        assert!(y.contains("    namespace: \"ml\"\n"));
        assert!(y.contains("current-context: \"kube-sim\"\n"));
    }

    #[test]
    fn anonymous_user_has_no_credentials() {
        let y = render("http://x", None, &KubeconfigOptions::default());
        assert!(y.contains("  user: {}\n"));
        assert!(!y.contains("token"));
    }
}
