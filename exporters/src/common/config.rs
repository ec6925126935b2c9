//! Config blocks shared by the OTLP exporters, with the reference collector's key names and
//! defaults (`tls`, `compression`, `retry_on_failure`, `sending_queue`, `headers`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// `compression`: the reference default is gzip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_lowercase().as_str() {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            // The reference treats an empty string as "no compression".
            "none" | "" => Ok(Compression::None),
            "snappy" | "x-snappy-framed" | "deflate" | "zlib" | "lz4" => Err(D::Error::custom(
                format!("compression {s:?} is not supported by Sonde; use gzip, zstd or none"),
            )),
            _ => Err(D::Error::custom(format!(
                "unknown compression {s:?}; expected gzip, zstd or none"
            ))),
        }
    }
}

/// `tls`: client side. Certificates are read at start, not at parse time, so `sonde validate`
/// does not depend on files that exist only where the collector runs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsClientConfig {
    /// gRPC only: plain text unless the endpoint says `https://`.
    pub insecure: bool,
    /// Encrypt but accept any server certificate.
    pub insecure_skip_verify: bool,
    pub ca_file: Option<String>,
    pub ca_pem: Option<String>,
    pub cert_file: Option<String>,
    pub cert_pem: Option<String>,
    pub key_file: Option<String>,
    pub key_pem: Option<String>,
    /// Name checked against the server certificate (and sent as SNI) instead of the endpoint host.
    pub server_name_override: Option<String>,
    /// Trust the system roots in addition to `ca_file`/`ca_pem`.
    pub include_system_ca_certs_pool: bool,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

/// A TLS protocol version rustls can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.trim().is_empty())
}

fn parse_tls_version(v: &str) -> Result<TlsVersion, String> {
    match v {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        "1.0" | "1.1" => Err(format!(
            "TLS version {v} is not supported by Sonde (rustls speaks 1.2 and 1.3)"
        )),
        _ => Err(format!(
            "unknown TLS version {v:?}; expected \"1.2\" or \"1.3\""
        )),
    }
}

impl TlsClientConfig {
    pub fn ca_file(&self) -> Option<&str> {
        non_empty(&self.ca_file)
    }
    pub fn ca_pem(&self) -> Option<&str> {
        non_empty(&self.ca_pem)
    }
    pub fn cert_file(&self) -> Option<&str> {
        non_empty(&self.cert_file)
    }
    pub fn cert_pem(&self) -> Option<&str> {
        non_empty(&self.cert_pem)
    }
    pub fn key_file(&self) -> Option<&str> {
        non_empty(&self.key_file)
    }
    pub fn key_pem(&self) -> Option<&str> {
        non_empty(&self.key_pem)
    }
    pub fn server_name_override(&self) -> Option<&str> {
        non_empty(&self.server_name_override)
    }

    /// `(min, max)`, defaulting to 1.2 and 1.3 like the reference.
    pub fn versions(&self) -> Result<(TlsVersion, TlsVersion), String> {
        let min = match non_empty(&self.min_version) {
            Some(v) => parse_tls_version(v)?,
            None => TlsVersion::V1_2,
        };
        let max = match non_empty(&self.max_version) {
            Some(v) => parse_tls_version(v)?,
            None => TlsVersion::V1_3,
        };
        if min > max {
            return Err("tls: min_version is greater than max_version".into());
        }
        Ok((min, max))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.ca_file().is_some() && self.ca_pem().is_some() {
            return Err("tls: provide either ca_file or ca_pem, not both".into());
        }
        if self.cert_file().is_some() && self.cert_pem().is_some() {
            return Err("tls: provide either cert_file or cert_pem, not both".into());
        }
        if self.key_file().is_some() && self.key_pem().is_some() {
            return Err("tls: provide either key_file or key_pem, not both".into());
        }
        let has_cert = self.cert_file().is_some() || self.cert_pem().is_some();
        let has_key = self.key_file().is_some() || self.key_pem().is_some();
        if has_cert != has_key {
            return Err("tls: a client certificate needs both a certificate and a key".into());
        }
        self.versions().map(|_| ())
    }
}

/// `retry_on_failure`, with the reference defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "pipeline_core::duration")]
    pub initial_interval: Duration,
    pub randomization_factor: f64,
    pub multiplier: f64,
    #[serde(with = "pipeline_core::duration")]
    pub max_interval: Duration,
    /// Total time spent retrying one batch; zero means no limit.
    #[serde(with = "pipeline_core::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err("retry_on_failure: randomization_factor must be between 0 and 1".into());
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err("retry_on_failure: multiplier must be at least 1".into());
        }
        if self.enabled && self.initial_interval.is_zero() {
            return Err("retry_on_failure: initial_interval must be positive".into());
        }
        Ok(())
    }
}

/// `sending_queue`. `queue_size` counts batches (requests), as the reference's default sizer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub enabled: bool,
    pub num_consumers: usize,
    pub queue_size: usize,
    /// Persistent queue (a storage extension id): not supported, rejected by `validate`.
    pub storage: Option<serde_yaml::Value>,
    /// Wait for room instead of dropping when the queue is full.
    #[serde(alias = "block_on_overflow")]
    pub blocking: bool,
    /// Sonde's memory bound on queued and in-flight data, in MiB (0 = none): a batch counts
    /// twice its encoded size, for the copy its send makes. Above it, callers wait: the
    /// pipeline pushes back to its receivers instead of growing.
    pub max_size_mib: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 1000,
            storage: None,
            blocking: false,
            max_size_mib: 32,
        }
    }
}

impl QueueConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.storage.as_ref().is_some_and(|s| !s.is_null()) {
            return Err(
                "sending_queue: storage (a persistent queue) is not supported by Sonde; \
                 remove it to use the in-memory queue"
                    .into(),
            );
        }
        if self.enabled && self.num_consumers == 0 {
            return Err("sending_queue: num_consumers must be positive".into());
        }
        if self.enabled && self.queue_size == 0 {
            return Err("sending_queue: queue_size must be positive".into());
        }
        Ok(())
    }
}

/// Checks `headers` and turns them into a header map once, so sends only clone it.
pub fn header_map(headers: &BTreeMap<String, String>) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("headers: {k:?} is not a valid header name"))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("headers: the value of {k:?} is not a valid header value"))?;
        map.insert(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names() {
        let c: Compression = serde_yaml::from_str("zstd").unwrap();
        assert_eq!(c, Compression::Zstd);
        let c: Compression = serde_yaml::from_str("\"\"").unwrap();
        assert_eq!(c, Compression::None);
        let e = serde_yaml::from_str::<Compression>("snappy").unwrap_err();
        assert!(e.to_string().contains("not supported by Sonde"), "{e}");
        assert!(serde_yaml::from_str::<Compression>("brotli").is_err());
    }

    #[test]
    fn tls_checks() {
        let t = TlsClientConfig {
            cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(t.validate().is_err());
        let t = TlsClientConfig {
            min_version: Some("1.0".into()),
            ..Default::default()
        };
        assert!(t.validate().unwrap_err().contains("not supported"));
        let t = TlsClientConfig {
            min_version: Some("1.3".into()),
            max_version: Some("1.2".into()),
            ..Default::default()
        };
        assert!(t.validate().is_err());
        let t = TlsClientConfig {
            ca_file: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(t.ca_file(), None);
        assert!(t.validate().is_ok());
    }

    #[test]
    fn queue_storage_rejected() {
        let q: QueueConfig = serde_yaml::from_str("storage: file_storage").unwrap();
        assert!(q.validate().unwrap_err().contains("not supported"));
        let q: QueueConfig = serde_yaml::from_str("queue_size: 0").unwrap();
        assert!(q.validate().is_err());
        let q: QueueConfig = serde_yaml::from_str("enabled: false\nqueue_size: 0").unwrap();
        assert!(q.validate().is_ok());
    }

    #[test]
    fn headers_checked() {
        let mut h = BTreeMap::new();
        h.insert("X-Api-Key".to_string(), "secret".to_string());
        let m = header_map(&h).unwrap();
        assert_eq!(m["x-api-key"], "secret");
        h.insert("bad header".to_string(), "x".to_string());
        assert!(header_map(&h).is_err());
    }
}
