//! What travels on an agent's stream: frames of plain serde JSON, one gRPC message each.
//!
//! Up (agent to server): calls, each with a request id the answer repeats, and watches (the
//! host API's event streams), each with a stream id its events repeat. Down: answers and
//! events. The payloads are the host API's own types; the transport adds nothing to them.

use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use flotilla_host::exec::{ExecError, ExecInput, ExecOutput, ExecRequest};
use flotilla_host::lb::TargetReport;
use flotilla_host::{HostApiError, HostSpec, LogEvent, TaskReport};
use flotilla_types::task::AwsvpcConfiguration;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The gRPC service and its one method.
pub(crate) const SERVICE: &str = "flotilla.link.Link";
pub(crate) const CONNECT_PATH: &str = "/flotilla.link.Link/Connect";
/// Metadata naming the host whose token the `authorization` header carries.
pub(crate) const HOST_HEADER: &str = "x-flotilla-host";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "frame")]
pub enum AgentFrame {
    Call {
        id: u64,
        call: Call,
    },
    Watch {
        id: u64,
        watch: Watch,
    },
    /// The agent no longer follows the stream `id`.
    Unwatch {
        id: u64,
    },
    /// The answer to the server's `Exec` `id`: the command runs, or why not.
    ExecStarted {
        id: u64,
        result: Result<(), ExecError>,
    },
    /// Output of the command `id`, its `Exit` last.
    ExecOutput {
        id: u64,
        output: ExecOutput,
    },
    /// The command `id` has no more output (after its `Exit`, or the host lost it).
    ExecEnded {
        id: u64,
    },
}

/// One [`flotilla_host::HostApi`] call: its method and arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "method")]
pub enum Call {
    Register { spec: HostSpec },
    Report { report: Box<TaskReport> },
    EnsureInterface { task_arn: String, attachment_id: String, awsvpc: AwsvpcConfiguration },
    Interface { task_arn: String },
    ReleaseInterface { task_arn: String },
    Interfaces { host_id: String },
    Vpc { vpc_id: String },
    TaskSecrets { task_arn: String },
    TaskVolumes { task_arn: String },
    TaskRoleCredentials { task_arn: String },
    ReportTargets { reports: Vec<TargetReport> },
    Heartbeat { host_id: String },
    EnsureLogGroup { group: String, create: bool },
    PutLogs { group: String, stream: String, events: Vec<LogEvent> },
}

impl Call {
    /// Whether the call may be sent again after a connection was lost before its answer
    /// came. Everything is, but appending logs: the first may have been stored.
    pub(crate) fn repeatable(&self) -> bool {
        !matches!(self, Call::PutLogs { .. })
    }

    /// The task the call acts on, when it names one: it must be the authenticated host's.
    pub(crate) fn task_arn(&self) -> Option<&str> {
        match self {
            Call::Report { report } => Some(&report.task_arn),
            Call::EnsureInterface { task_arn, .. }
            | Call::Interface { task_arn }
            | Call::ReleaseInterface { task_arn }
            | Call::TaskSecrets { task_arn }
            | Call::TaskVolumes { task_arn }
            | Call::TaskRoleCredentials { task_arn } => Some(task_arn),
            _ => None,
        }
    }

    /// The host the call acts for, when it names one: it must be the authenticated host.
    pub(crate) fn host_id(&self) -> Option<&str> {
        match self {
            Call::Register { spec } => Some(&spec.id),
            Call::Interfaces { host_id } | Call::Heartbeat { host_id } => Some(host_id),
            _ => None,
        }
    }
}

/// One of the host API's event streams.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "stream")]
pub enum Watch {
    /// The host's assignments, from `since` (the newest revision the agent has).
    Assignments {
        host_id: String,
        since: Option<u64>,
    },
    Network,
    LoadBalancers {
        host_id: String,
    },
    ServiceDiscovery,
}

impl Watch {
    pub(crate) fn host_id(&self) -> Option<&str> {
        match self {
            Watch::Assignments { host_id, .. } | Watch::LoadBalancers { host_id } => Some(host_id),
            Watch::Network | Watch::ServiceDiscovery => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "frame")]
pub enum ServerFrame {
    /// The answer to the call `id`: its value as JSON, or the host API's error.
    Answer { id: u64, result: Result<Value, HostApiError> },
    /// An event of the stream `id`.
    Event { id: u64, event: Result<Value, HostApiError> },
    /// Run a command in one of the host's containers (ECS Exec), as session `id`: the
    /// direction of the rest reversed, the server asks and the agent answers.
    Exec { id: u64, request: ExecRequest },
    /// Input for the command `id`.
    ExecInput { id: u64, input: ExecInput },
    /// The session `id` is over: the agent ends the command (see `flotilla_host::exec`).
    ExecEnd { id: u64 },
}

/// Frames as JSON in gRPC messages.
pub(crate) struct JsonCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for JsonCodec<E, D> {
    fn default() -> Self {
        JsonCodec(PhantomData)
    }
}

pub(crate) struct JsonEncoder<E>(PhantomData<fn(E)>);
pub(crate) struct JsonDecoder<D>(PhantomData<fn() -> D>);

impl<E: Serialize + Send + 'static, D: DeserializeOwned + Send + 'static> Codec for JsonCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = JsonEncoder<E>;
    type Decoder = JsonDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        JsonEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        JsonDecoder(PhantomData)
    }
}

impl<E: Serialize> Encoder for JsonEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        serde_json::to_writer(dst.writer(), &item).map_err(|e| Status::internal(format!("cannot encode a frame: {e}")))
    }
}

impl<D: DeserializeOwned> Decoder for JsonDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let frame = serde_json::from_reader(src.reader())
            .map_err(|e| Status::invalid_argument(format!("malformed frame: {e}")))?;
        Ok(Some(frame))
    }
}
