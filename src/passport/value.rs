//! Knob values: plain `f64`s that print integers without a fractional part (`8`, not `8.0`), in JSON
//! and in the annotation strings the trainer reads.

use serde::Serializer;

/// Integral values below this magnitude print as integers; they are exact in an `f64`.
const EXACT_INT: f64 = 9_007_199_254_740_992.0; // 2^53

/// The text of a knob value: `8`, `-3`, `0.25`. Never `8.0`, never an exponent for integers.
/// The caller guarantees a finite value (the envelope never lets a non-finite one through).
pub fn format_knob_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < EXACT_INT {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// serde `serialize_with` for knob values: integers as JSON integers.
pub fn serialize_knob_value<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < EXACT_INT {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_have_no_fraction() {
        assert_eq!(format_knob_value(8.0), "8");
        assert_eq!(format_knob_value(-3.0), "-3");
        assert_eq!(format_knob_value(-0.0), "0");
        assert_eq!(format_knob_value(15000.0), "15000");
        assert_eq!(format_knob_value(0.25), "0.25");
        assert_eq!(format_knob_value(1e20), "100000000000000000000");
    }

    #[test]
    fn json_integers_serialize_as_integers() {
        #[derive(serde::Serialize)]
        struct V {
            #[serde(serialize_with = "serialize_knob_value")]
            v: f64,
        }
        assert_eq!(
            serde_json::to_string(&V { v: 16.0 }).unwrap(),
            r#"{"v":16}"#
        );
        assert_eq!(
            serde_json::to_string(&V { v: 0.5 }).unwrap(),
            r#"{"v":0.5}"#
        );
    }
}
