//! Parsing a source's bytes, and the canonical JSON that travels to the workers.

use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// The format of a configuration file's or Redis key's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigFormat {
    /// JSON (`serde_json`).
    Json,
    /// TOML (`toml`).
    Toml,
}

impl ConfigFormat {
    /// The format a file's extension says: TOML for `.toml`, JSON otherwise.
    pub(super) fn of_path(path: &Path) -> ConfigFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => ConfigFormat::Toml,
            _ => ConfigFormat::Json,
        }
    }

    /// Parses `bytes` as a `T`; the error says what is wrong and where.
    pub(super) fn parse<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            ConfigFormat::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            ConfigFormat::Toml => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| format!("not UTF-8 text, so not TOML: {e}"))?;
                toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
            }
        }
    }
}

/// `value` as JSON with every object's keys sorted: the same configuration gives the same bytes,
/// whatever the iteration order of its maps, so the master does not renumber an unchanged value.
pub(super) fn canonical<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let tree = serde_json::to_value(value).map_err(|e| format!("cannot encode it as JSON: {e}"))?;
    serde_json::to_vec(&sorted(tree)).map_err(|e| format!("cannot encode it as JSON: {e}"))
}

/// Sorts every object's keys (explicitly: serde_json keeps insertion order when another crate
/// turns its `preserve_order` feature on).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Decodes canonical JSON.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Conf {
        name: String,
        #[serde(default)]
        limits: HashMap<String, u32>,
        #[serde(default)]
        extra: Option<serde_json::Value>,
    }

    #[test]
    fn json_and_toml_parse_into_the_same_value() {
        let json: Conf = ConfigFormat::Json
            .parse(br#"{"name":"a","limits":{"x":1,"y":2}}"#)
            .unwrap();
        let toml: Conf = ConfigFormat::Toml
            .parse(b"name = \"a\"\n[limits]\nx = 1\ny = 2\n")
            .unwrap();
        assert_eq!(json, toml);
    }

    #[test]
    fn a_bad_payload_says_what_is_wrong() {
        let err = ConfigFormat::Json
            .parse::<Conf>(b"{\"name\": 5}")
            .unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = ConfigFormat::Json.parse::<Conf>(b"not json").unwrap_err();
        assert!(err.contains("expected"), "{err}");
        let err = ConfigFormat::Toml.parse::<Conf>(b"name = ").unwrap_err();
        assert!(!err.is_empty());
        let err = ConfigFormat::Toml.parse::<Conf>(&[0xff, 0xfe]).unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn the_canonical_form_ignores_map_order_and_round_trips() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..50 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            b.insert(format!("k{i}"), i);
        }
        let (a, b) = (
            Conf {
                name: "n".into(),
                limits: a,
                extra: Some(serde_json::json!({"z": 1, "a": [1, 2]})),
            },
            Conf {
                name: "n".into(),
                limits: b,
                extra: Some(serde_json::json!({"a": [1, 2], "z": 1})),
            },
        );
        let (ca, cb) = (canonical(&a).unwrap(), canonical(&b).unwrap());
        assert_eq!(ca, cb);
        assert_eq!(decode::<Conf>(&ca).unwrap(), a);
    }

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(
            ConfigFormat::of_path(Path::new("/etc/app.TOML")),
            ConfigFormat::Toml
        );
        assert_eq!(
            ConfigFormat::of_path(Path::new("app.json")),
            ConfigFormat::Json
        );
        assert_eq!(ConfigFormat::of_path(Path::new("app")), ConfigFormat::Json);
    }
}
