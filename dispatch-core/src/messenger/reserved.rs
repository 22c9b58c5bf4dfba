//! The runtime's own topics (`dispatch:…`): refused to user code, and the master's refusal read
//! back as a typed error.

use super::error::MessageError;

/// [`MessageError::Reserved`] for the runtime's own topics.
pub(super) fn reserved(topic: &str) -> Result<(), MessageError> {
    if crate::topic::is_reserved(topic) {
        Err(MessageError::Reserved {
            topic: topic.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// The master's reason for not delivering, typed.
pub(super) fn rejection(reason: String) -> MessageError {
    if let Some(topic) = reason
        .strip_prefix(RESERVED_REFUSAL)
        .and_then(|rest| rest.split('`').nth(1))
    {
        return MessageError::Reserved {
            topic: topic.to_owned(),
        };
    }
    MessageError::Rejected { reason }
}

/// How the master's refusal of a reserved topic starts (`master::routing`).
pub(crate) const RESERVED_REFUSAL: &str = "reserved topic: ";
