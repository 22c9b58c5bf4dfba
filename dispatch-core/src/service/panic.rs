//! Panic payloads turned into messages that can travel back to a caller.

use std::any::Any;

/// The message of a panic payload (`&str` or `String`; anything else gets a placeholder).
pub(crate) fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
