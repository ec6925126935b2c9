//! The few protobuf messages the exporters read from servers, declared here because only a
//! handful of fields matter: `google.rpc.Status` (error details, including `RetryInfo`) and the
//! `partial_success` of the three OTLP export responses, which share one shape.

use std::time::Duration;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `Some(delay)` when an encoded `google.rpc.Status` carries a `RetryInfo` (a missing delay is
/// zero), `None` when it has none or does not decode.
pub fn retry_info_delay(status_details: &[u8]) -> Option<Duration> {
    if status_details.is_empty() {
        return None;
    }
    let status = RpcStatus::decode(status_details).ok()?;
    let info = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let info = RetryInfo::decode(info.value.as_slice()).ok()?;
    Some(info.retry_delay.map_or(Duration::ZERO, |d| {
        Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.clamp(0, 999_999_999) as u32,
        )
    }))
}

/// `Export{Trace,Metrics,Logs}ServiceResponse`: field 1 is `partial_success`, whose field 1 is
/// the count of rejected spans / data points / log records and field 2 the message.
#[derive(Clone, PartialEq, Message)]
pub struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

impl ExportResponse {
    pub fn accepted(&self) -> super::queue::Accepted {
        match &self.partial_success {
            Some(p) => super::queue::Accepted {
                rejected: p.rejected.max(0) as u64,
                message: p.error_message.clone(),
            },
            None => super::queue::Accepted::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn status_with_retry_info(delay: Option<Duration>) -> Vec<u8> {
        let info = RetryInfo {
            retry_delay: delay.map(|d| ProtoDuration {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            }),
        };
        RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![ProtoAny {
                type_url: RETRY_INFO_TYPE.into(),
                value: info.encode_to_vec(),
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn retry_info_is_found() {
        let d = status_with_retry_info(Some(Duration::from_millis(1500)));
        assert_eq!(retry_info_delay(&d), Some(Duration::from_millis(1500)));
        let d = status_with_retry_info(None);
        assert_eq!(retry_info_delay(&d), Some(Duration::ZERO));
        let other = RpcStatus {
            code: 8,
            message: String::new(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.QuotaFailure".into(),
                value: vec![],
            }],
        }
        .encode_to_vec();
        assert_eq!(retry_info_delay(&other), None);
        assert_eq!(retry_info_delay(b""), None);
        assert_eq!(retry_info_delay(b"\xff\xff"), None);
    }

    #[test]
    fn partial_success_matches_the_otlp_responses() {
        use pipeline_core::otlp::tonic::collector::trace::v1::{
            ExportTracePartialSuccess, ExportTraceServiceResponse,
        };
        let r = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "bad spans".into(),
            }),
        };
        let ours = ExportResponse::decode(r.encode_to_vec().as_slice()).unwrap();
        let a = ours.accepted();
        assert_eq!((a.rejected, a.message.as_str()), (3, "bad spans"));
    }
}
