//! Secrets out of text before it leaves the machine in a support bundle: kubeconfig credentials
//! (`token`, `client-key-data`, passwords, auth-provider tokens), bearer tokens and `Authorization`
//! headers anywhere, credentials in URLs, PEM private keys, JWTs, and JSON or YAML fields whose name
//! says secret (`private_key`, `hmac_key`, `api_key`, …). Licenses are not secrets (a signature only
//! proves who issued them) and stay readable. Pure text in, text out.

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

/// Field names (lowercase, `-`/`_` removed) whose value is a secret.
const SECRET_KEYS: &[&str] = &[
    "token",
    "bearertoken",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "idptoken",
    "authtoken",
    "apitoken",
    "apikey",
    "password",
    "passwd",
    "secret",
    "clientsecret",
    "clientkeydata",
    "clientkey",
    "privatekey",
    "signingkey",
    "hmackey",
    "secretkey",
    "authorization",
    "cookie",
];

fn is_secret_key(name: &str) -> bool {
    let norm: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEYS.contains(&norm.as_str())
}

/// Text with every secret replaced by [`REDACTED`], and how many were replaced.
pub fn redact(text: &str) -> (String, usize) {
    let mut n = 0;
    let s = redact_pem(text, &mut n);
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let l = redact_fields(line, &mut n);
        let l = redact_bearer(&l, &mut n);
        let l = redact_url_userinfo(&l, &mut n);
        let l = redact_jwt(&l, &mut n);
        out.push_str(&l);
    }
    (out, n)
}

/// `-----BEGIN … PRIVATE KEY-----` blocks, whole.
fn redact_pem(text: &str, n: &mut usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let head_end = rest[start..]
            .find("-----\n")
            .or(rest[start..].find("-----\\n"));
        let is_private = head_end.is_some_and(|e| rest[start..start + e].ends_with("PRIVATE KEY"));
        if !is_private {
            out.push_str(&rest[..start + 11]);
            rest = &rest[start + 11..];
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(REDACTED);
        *n += 1;
        // Up to the end marker's closing dashes, or the end of the text.
        match rest[start..].find("-----END ") {
            Some(e) => {
                let after = start + e + 9;
                let close = rest[after..]
                    .find("-----")
                    .map_or(rest.len(), |c| after + c + 5);
                rest = &rest[close..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=' | ':')
}

/// `Bearer <token>` / `Basic <credentials>`, any case.
fn redact_bearer(line: &str, n: &mut usize) -> String {
    let lower = line.to_ascii_lowercase();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let hit = ["bearer ", "basic "]
            .iter()
            .find(|p| lower[i..].starts_with(**p))
            .filter(|_| i == 0 || !lower.as_bytes()[i - 1].is_ascii_alphanumeric());
        if let Some(p) = hit {
            let start = i + p.len();
            let len: usize = line[start..]
                .chars()
                .take_while(|c| token_char(*c))
                .map(char::len_utf8)
                .sum();
            if len >= 8 && line[start..start + len] != *REDACTED {
                out.push_str(&line[i..start]);
                out.push_str(REDACTED);
                *n += 1;
                i = start + len;
                continue;
            }
        }
        let c = line[i..].chars().next().expect("in bounds");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// `scheme://user:password@host` -> `scheme://REDACTED@host`.
fn redact_url_userinfo(line: &str, n: &mut usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find("://") {
        let auth_start = at + 3;
        out.push_str(&rest[..auth_start]);
        let tail = &rest[auth_start..];
        let auth_end = tail
            .find(['/', '?', '#', '"', '\'', ' ', '`', '\\'])
            .unwrap_or(tail.len());
        match tail[..auth_end].rfind('@') {
            Some(a) if a > 0 && &tail[..a] != REDACTED => {
                out.push_str(REDACTED);
                *n += 1;
                rest = &tail[a..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Three base64url segments starting `eyJ` (a JSON header): a JWT such as a service-account token.
fn redact_jwt(line: &str, n: &mut usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(p) = rest.find("eyJ") {
        let cand = &rest[p..];
        let len = cand
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(cand.len());
        let parts: Vec<&str> = cand[..len].split('.').collect();
        let boundary = p == 0 || !rest.as_bytes()[p - 1].is_ascii_alphanumeric();
        if boundary && parts.len() == 3 && parts.iter().all(|s| s.len() >= 4) {
            out.push_str(&rest[..p]);
            out.push_str(REDACTED);
            *n += 1;
        } else {
            out.push_str(&rest[..p + len.max(3)]);
        }
        rest = &rest[p + len.max(3)..];
    }
    out.push_str(rest);
    out
}

/// `"name": "value"` (JSON, possibly several on a line) and `name: value` / `name=value` (YAML,
/// env files) where the name says secret: the value becomes [`REDACTED`].
fn redact_fields(line: &str, n: &mut usize) -> String {
    let json = redact_json_fields(line, n);
    redact_yaml_field(&json, n)
}

fn redact_json_fields(line: &str, n: &mut usize) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        // A quoted name, then optional spaces, a colon, optional spaces, a quoted value.
        let Some(name_len) = line[i + 1..].find('"') else {
            break;
        };
        let name = &line[i + 1..i + 1 + name_len];
        let mut j = i + 2 + name_len;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b':' && is_secret_key(name) {
            j += 1;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                // The value's end: the next unescaped quote.
                let mut k = j + 1;
                while k < b.len() && b[k] != b'"' {
                    k += if b[k] == b'\\' { 2 } else { 1 };
                }
                let value = &line[j + 1..k.min(b.len())];
                if !value.is_empty() && value != REDACTED {
                    out.push_str(&line[copied..j + 1]);
                    out.push_str(REDACTED);
                    *n += 1;
                    copied = k.min(b.len());
                }
                i = k + 1;
                continue;
            }
        }
        i += 2 + name_len;
    }
    out.push_str(&line[copied.min(line.len())..]);
    out
}

fn redact_yaml_field(line: &str, n: &mut usize) -> String {
    let trimmed = line.trim_start();
    let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
    let lead = &line[..line.len() - body.len()];
    let Some(sep) = body.find([':', '=']) else {
        return line.to_string();
    };
    // The last word before the separator: `export API_TOKEN=…`, `header authorization: …`.
    let name = body[..sep]
        .split_whitespace()
        .next_back()
        .unwrap_or("")
        .trim_matches(['"', '\'']);
    if name.is_empty() || !is_secret_key(name) {
        return line.to_string();
    }
    let value = body[sep + 1..].trim();
    let unquoted = value.trim_matches(['"', '\'']);
    if unquoted.is_empty() || unquoted == REDACTED || value.starts_with(['{', '[', '|', '>']) {
        return line.to_string();
    }
    *n += 1;
    let space = if body.as_bytes()[sep] == b':' {
        " "
    } else {
        ""
    };
    format!("{lead}{}{space}{REDACTED}", &body[..=sep])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(s).0
    }

    #[test]
    fn kubeconfig_credentials() {
        let kc = "users:\n- name: admin\n  user:\n    token: sha256~abcdefghijklmnop\n    client-key-data: LS0tLS1CRUdJTiBSU0E=\n    client-certificate-data: LS0tQ0VSVA==\n    password: hunter2\n";
        let (out, n) = redact(kc);
        assert_eq!(n, 3, "{out}");
        assert!(out.contains("    token: REDACTED\n"), "{out}");
        assert!(out.contains("    client-key-data: REDACTED\n"), "{out}");
        assert!(out.contains("    password: REDACTED\n"), "{out}");
        assert!(
            out.contains("client-certificate-data: LS0tQ0VSVA=="),
            "a certificate is public"
        );
        assert!(!out.contains("abcdefghijklmnop") && !out.contains("hunter2"));
    }

    #[test]
    fn json_fields_bearer_urls_jwts_and_pem() {
        let line = r#"{"url":"https://bob:s3cret@prom.example:9090/api","private_key":"AAAA\"BBBB","kid":"k1","headers":{"Authorization":"Bearer abcdefgh12345678"}}"#;
        let out = r(line);
        assert!(
            !out.contains("s3cret") && !out.contains("AAAA") && !out.contains("abcdefgh1234"),
            "{out}"
        );
        assert!(out.contains(r#""kid":"k1""#), "{out}");
        assert!(
            out.contains("https://REDACTED@prom.example:9090/api"),
            "{out}"
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&out).is_ok(),
            "still JSON: {out}"
        );
        let log = "GET /api with header authorization: bearer eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl done";
        let out = r(log);
        assert!(!out.contains("eyJzdWIi"), "{out}");
        let jwt = "token was eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.sig0123456789 end";
        assert_eq!(r(jwt), "token was REDACTED end");
        let pem = "a\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\nb\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let out = r(pem);
        assert_eq!(
            out,
            "a\nREDACTED\nb\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for s in [
            r#"{"ts":"2026-01-01T00:00:00Z","event":"observe_start","payload":{"path":"t.jsonl"}}"#,
            "step_time_ms: 120.5",
            "tokens_per_second: 1234",
            r#"{"license":{"signature":"c2lnbmF0dXJlIGJ5dGVz","license_id":"lic-1"}}"#,
            "see https://example.com/docs#token for details",
            "",
        ] {
            assert_eq!(redact(s), (s.to_string(), 0), "{s}");
        }
        // Already redacted stays as it is (a bundle of a bundle).
        let once = r("password: x1");
        assert_eq!(redact(&once), (once.clone(), 0));
        assert_eq!(r("export API_TOKEN=abc123"), "export API_TOKEN=REDACTED");
        assert_eq!(r("API_KEY=abc123"), "API_KEY=REDACTED");
    }
}
