//! `-o json|yaml`: the same document in either syntax. YAML is emitted here from the JSON value (block
//! style, every string double-quoted with JSON escapes, which YAML reads the same), so both outputs
//! always carry the same fields.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use super::OutputFormat;

/// Whether `-o` asks for a document rather than the human summary.
pub fn structured(format: OutputFormat) -> bool {
    matches!(format, OutputFormat::Json | OutputFormat::Yaml)
}

/// Prints `value` as pretty JSON or as YAML, with a final newline.
pub fn print_structured(
    w: &mut dyn Write,
    format: OutputFormat,
    value: &impl Serialize,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Yaml => w.write_all(to_yaml(&serde_json::to_value(value)?).as_bytes())?,
        _ => {
            serde_json::to_writer_pretty(&mut *w, value)?;
            writeln!(w)?;
        }
    }
    Ok(())
}

/// A YAML document for a JSON value.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

/// Scalars and empty collections, on the line of their key.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn nested(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        let key = Value::String(k.clone()).to_string();
        out.push_str(&format!("{pad}{key}:"));
        value_after_key(out, v, indent);
    }
}

fn seq(out: &mut String, a: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for v in a {
        out.push_str(&format!("{pad}-"));
        value_after_key(out, v, indent);
    }
}

fn value_after_key(out: &mut String, v: &Value, indent: usize) {
    if !nested(v) {
        out.push(' ');
        out.push_str(&inline(v));
        out.push('\n');
        return;
    }
    out.push('\n');
    match v {
        Value::Object(m) => map(out, m, indent + 2),
        Value::Array(a) => seq(out, a, indent + 2),
        _ => unreachable!("scalars are inline"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nested_documents_keep_their_shape() {
        let v = json!({"a": 1, "b": [true, null, {"c": "x"}, []], "d": {}, "e": {"f": [[1, 2]]}});
        assert_eq!(
            to_yaml(&v),
            "\"a\": 1\n\"b\":\n  - true\n  - null\n  -\n    \"c\": \"x\"\n  - []\n\"d\": {}\n\"e\":\n  \"f\":\n    -\n      - 1\n      - 2\n"
        );
        assert_eq!(to_yaml(&json!("no: quote")), "\"no: quote\"\n");
    }
}
