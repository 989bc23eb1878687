//! The Session Manager data channel's binary frame, `AgentMessage`, and the JSON payloads both
//! sides exchange in it (SESSION-PROTOCOL.md sections 2-4, 6, 8).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The offset of PayloadLength: every field before it is fixed-size.
const HEADER_LENGTH: u32 = 116;
const TYPE_LEN: usize = 32;

pub const INPUT_STREAM_DATA: &str = "input_stream_data";
pub const OUTPUT_STREAM_DATA: &str = "output_stream_data";
pub const ACKNOWLEDGE: &str = "acknowledge";
pub const CHANNEL_CLOSED: &str = "channel_closed";

/// `PayloadType` values.
pub mod payload {
    pub const OUTPUT: u32 = 1;
    pub const SIZE: u32 = 3;
    pub const HANDSHAKE_REQUEST: u32 = 5;
    pub const HANDSHAKE_RESPONSE: u32 = 6;
    pub const HANDSHAKE_COMPLETE: u32 = 7;
    pub const FLAG: u32 = 10;
    /// Only sent to Flotilla's own client: AWS's plugin would print it as output.
    pub const STDERR: u32 = 11;
    /// Only sent to Flotilla's own client, for the same reason: a big-endian i32.
    pub const EXIT_CODE: u32 = 12;
}

/// A `Flag` payload value that only Flotilla's client sends (AWS's are 1 to 3): its stdin is
/// at end of file.
pub const FLAG_CLOSE_STDIN: u32 = 0x464c_0001;

/// Why a frame could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("frame of {0} bytes is shorter than an AgentMessage header")]
    Short(usize),
    #[error("header length {0} is not 116")]
    HeaderLength(u32),
    #[error("payload digest does not match")]
    Digest,
}

/// One frame of the data channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentMessage {
    pub message_type: String,
    pub schema_version: u32,
    pub created_date: u64,
    pub sequence_number: i64,
    pub flags: u64,
    pub message_id: Uuid,
    pub payload_type: u32,
    pub payload: Vec<u8>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1)
}

impl AgentMessage {
    /// A stream message (`input_stream_data` / `output_stream_data`) with a fresh id.
    pub fn stream(message_type: &str, sequence_number: i64, payload_type: u32, payload: Vec<u8>) -> AgentMessage {
        AgentMessage {
            message_type: message_type.to_owned(),
            schema_version: 1,
            created_date: now_ms(),
            sequence_number,
            flags: if sequence_number == 0 { 1 } else { 0 },
            message_id: Uuid::new_v4(),
            payload_type,
            payload,
        }
    }

    /// The acknowledgement of `self`: the plugin matches it by sequence number only.
    pub fn ack(&self) -> AgentMessage {
        let body = Acknowledge {
            acknowledged_message_type: self.message_type.clone(),
            acknowledged_message_id: self.message_id.to_string(),
            acknowledged_message_sequence_number: self.sequence_number,
            is_sequential_message: true,
        };
        AgentMessage {
            flags: 3,
            ..AgentMessage::stream(ACKNOWLEDGE, 0, 0, serde_json::to_vec(&body).unwrap_or_default())
        }
    }

    /// `channel_closed`: the session is over (the plugin prints `output` if not empty).
    pub fn channel_closed(session_id: &str, output: &str) -> AgentMessage {
        let id = Uuid::new_v4();
        let body = serde_json::json!({
            "MessageId": id.to_string(),
            // The plugin reads it as a string.
            "CreatedDate": flotilla_types::Timestamp::now().rfc3339(),
            "DestinationId": session_id,
            "SessionId": session_id,
            "MessageType": CHANNEL_CLOSED,
            "SchemaVersion": 1,
            "Output": output,
        });
        AgentMessage {
            message_id: id,
            ..AgentMessage::stream(CHANNEL_CLOSED, 0, 0, serde_json::to_vec(&body).unwrap_or_default())
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(120 + self.payload.len());
        out.extend_from_slice(&HEADER_LENGTH.to_be_bytes());
        let mut kind = [b' '; TYPE_LEN];
        let n = self.message_type.len().min(TYPE_LEN);
        kind[..n].copy_from_slice(&self.message_type.as_bytes()[..n]);
        out.extend_from_slice(&kind);
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.created_date.to_be_bytes());
        out.extend_from_slice(&self.sequence_number.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        // The plugin's UUID layout puts the low half first.
        let id = self.message_id.as_bytes();
        out.extend_from_slice(&id[8..16]);
        out.extend_from_slice(&id[0..8]);
        out.extend_from_slice(&Sha256::digest(&self.payload));
        out.extend_from_slice(&self.payload_type.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(frame: &[u8]) -> Result<AgentMessage, MessageError> {
        if frame.len() < 120 {
            return Err(MessageError::Short(frame.len()));
        }
        let u32_at = |o: usize| u32::from_be_bytes(frame[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_be_bytes(frame[o..o + 8].try_into().unwrap_or_default());
        let header = u32_at(0);
        if header != HEADER_LENGTH {
            return Err(MessageError::HeaderLength(header));
        }
        let kind = String::from_utf8_lossy(&frame[4..36]).trim_matches(|c| c == ' ' || c == '\0').to_owned();
        let mut id = [0u8; 16];
        id[8..16].copy_from_slice(&frame[64..72]);
        id[0..8].copy_from_slice(&frame[72..80]);
        // As the plugin reads it: the payload is everything after the length field.
        let payload = frame[120..].to_vec();
        if !payload.is_empty() && Sha256::digest(&payload).as_slice() != &frame[80..112] {
            return Err(MessageError::Digest);
        }
        Ok(AgentMessage {
            message_type: kind,
            schema_version: u32_at(36),
            created_date: u64_at(40),
            sequence_number: u64_at(48) as i64,
            flags: u64_at(56),
            message_id: Uuid::from_bytes(id),
            payload_type: u32_at(112),
            payload,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Acknowledge {
    pub acknowledged_message_type: String,
    pub acknowledged_message_id: String,
    pub acknowledged_message_sequence_number: i64,
    pub is_sequential_message: bool,
}

/// The client's first (text) frame.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OpenDataChannel {
    #[serde(default)]
    pub message_schema_version: String,
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub token_value: String,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_version: String,
    /// Only Flotilla's client sets it: it wants StdErr, ExitCode and the CloseStdin flag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flotilla_client: bool,
    /// Flotilla's client only: run the command with pipes rather than a terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flotilla_pipes: bool,
}

/// `{"cols":C,"rows":R}`, the Size payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct SizeData {
    pub cols: u16,
    pub rows: u16,
}

/// The HandshakeRequest the service sends first: a plain shell session, no KMS.
pub fn handshake_request() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "AgentVersion": "3.3.0.0",
        "RequestedClientActions": [{
            "ActionType": "SessionType",
            "ActionParameters": {"SessionType": "Standard_Stream", "Properties": {}},
        }],
    }))
    .unwrap_or_default()
}

/// The client's answer to [`handshake_request`].
pub fn handshake_response(client_version: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ClientVersion": client_version,
        "ProcessedClientActions": [{"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": null, "Error": ""}],
        "Errors": null,
    }))
    .unwrap_or_default()
}

pub fn handshake_complete(elapsed: std::time::Duration) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "HandshakeTimeToComplete": elapsed.as_nanos() as u64,
        "CustomerMessage": "",
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_the_plugins_layout() {
        let m = AgentMessage::stream(OUTPUT_STREAM_DATA, 7, payload::OUTPUT, b"hello".to_vec());
        let bytes = m.encode();
        assert_eq!(&bytes[0..4], &116u32.to_be_bytes());
        assert_eq!(&bytes[4..22], b"output_stream_data");
        assert_eq!(bytes[22], b' ');
        assert_eq!(&bytes[64..72], &m.message_id.as_bytes()[8..16]);
        assert_eq!(u32::from_be_bytes(bytes[116..120].try_into().unwrap()), 5);
        assert_eq!(AgentMessage::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn a_bad_digest_or_header_is_refused() {
        let mut bytes = AgentMessage::stream(INPUT_STREAM_DATA, 0, 1, b"x".to_vec()).encode();
        *bytes.last_mut().unwrap() = b'y';
        assert_eq!(AgentMessage::decode(&bytes), Err(MessageError::Digest));
        assert_eq!(AgentMessage::decode(&bytes[..50]), Err(MessageError::Short(50)));
        bytes[3] = 0;
        assert_eq!(AgentMessage::decode(&bytes), Err(MessageError::HeaderLength(0)));
    }

    #[test]
    fn acks_name_the_message_they_acknowledge() {
        let m = AgentMessage::stream(INPUT_STREAM_DATA, 4, 1, b"ls\r".to_vec());
        let ack = AgentMessage::decode(&m.ack().encode()).unwrap();
        assert_eq!(ack.message_type, ACKNOWLEDGE);
        let body: Acknowledge = serde_json::from_slice(&ack.payload).unwrap();
        assert_eq!(body.acknowledged_message_sequence_number, 4);
        assert_eq!(body.acknowledged_message_id, m.message_id.to_string());
    }
}
