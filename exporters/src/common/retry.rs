//! Retry on failure, split into three testable parts: each transport's *classifier* turns a
//! failed attempt into a [`Disposition`]; [`Backoff`] computes jittered exponential delays under
//! a total cap; [`Retrier::run`] loops over attempts with a per-attempt timeout and gives up
//! early once shutdown has begun.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::config::RetryConfig;

/// What a failed attempt means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Worth trying again; `after` is the delay the server asked for, if any.
    Retry { after: Option<Duration> },
    /// Retrying cannot help (bad request, auth, ...): the batch is dropped.
    Permanent,
}

/// One failed attempt, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub disposition: Disposition,
    pub message: String,
}

impl SendError {
    pub fn retryable(message: impl Into<String>) -> SendError {
        SendError {
            disposition: Disposition::Retry { after: None },
            message: message.into(),
        }
    }

    pub fn throttled(message: impl Into<String>, after: Option<Duration>) -> SendError {
        SendError {
            disposition: Disposition::Retry { after },
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError {
            disposition: Disposition::Permanent,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.disposition, Disposition::Retry { .. })
    }
}

/// Jittered exponential backoff, as the reference collector's: each delay is the current
/// interval randomised by ±`randomization_factor`, the interval grows by `multiplier` up to
/// `max_interval`, and retrying stops once the next attempt would start after
/// `max_elapsed_time` (zero: never stop).
#[derive(Debug, Clone)]
pub struct Backoff {
    current: Duration,
    max_interval: Duration,
    multiplier: f64,
    randomization_factor: f64,
    max_elapsed: Option<Duration>,
}

impl Backoff {
    pub fn new(cfg: &RetryConfig) -> Backoff {
        Backoff {
            current: cfg.initial_interval,
            max_interval: cfg.max_interval,
            multiplier: cfg.multiplier,
            randomization_factor: cfg.randomization_factor,
            max_elapsed: (!cfg.max_elapsed_time.is_zero()).then_some(cfg.max_elapsed_time),
        }
    }

    /// The delay before the next attempt, or `None` when the total cap would be exceeded.
    /// `elapsed` counts from the first attempt; `hint` is a server-requested delay (RetryInfo,
    /// Retry-After), which wins when longer; `unit` is a uniform random number in `[0, 1)`.
    pub fn next_delay(
        &mut self,
        elapsed: Duration,
        hint: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let base = self.current.as_secs_f64();
        let delta = self.randomization_factor * base;
        let jittered = Duration::from_secs_f64((base - delta + unit * 2.0 * delta).max(0.0));
        self.current = self.current.mul_f64(self.multiplier).min(self.max_interval);
        let delay = hint.map_or(jittered, |h| h.max(jittered));
        match self.max_elapsed {
            Some(max) if elapsed + delay > max => None,
            _ => Some(delay),
        }
    }
}

/// Why a batch was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    Permanent,
    /// Retries are disabled, or `max_elapsed_time` was reached.
    Exhausted,
    /// Shutdown began while the batch was waiting to be retried.
    Shutdown,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {last} (after {attempts} attempt{})", match .reason {
    GiveUp::Permanent => "not retryable",
    GiveUp::Exhausted => "no more retries left",
    GiveUp::Shutdown => "interrupted by shutdown",
}, if *.attempts == 1 { "" } else { "s" })]
pub struct Failed {
    pub reason: GiveUp,
    pub last: SendError,
    pub attempts: u32,
}

/// Drives attempts of one batch until success, a permanent error, the retry budget, or shutdown.
#[derive(Clone)]
pub struct Retrier {
    pub cfg: RetryConfig,
    /// Each attempt's deadline (the exporter's `timeout`).
    pub timeout: Duration,
    /// Cancelled when shutdown begins: pending retries are abandoned, not waited out.
    pub stop: CancellationToken,
    /// For log lines.
    pub id: String,
}

impl Retrier {
    pub async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, Failed>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SendError>>,
    {
        let start = Instant::now();
        let mut backoff = Backoff::new(&self.cfg);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let err = match tokio::time::timeout(self.timeout, attempt()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => SendError::retryable(format!(
                    "request timed out after {:?} (deadline exceeded)",
                    self.timeout
                )),
            };
            let hint = match err.disposition {
                Disposition::Permanent => {
                    return Err(Failed {
                        reason: GiveUp::Permanent,
                        last: err,
                        attempts,
                    })
                }
                Disposition::Retry { after } => after,
            };
            let give_up = |reason| Failed {
                reason,
                last: err.clone(),
                attempts,
            };
            if !self.cfg.enabled {
                return Err(give_up(GiveUp::Exhausted));
            }
            if self.stop.is_cancelled() {
                return Err(give_up(GiveUp::Shutdown));
            }
            let Some(delay) = backoff.next_delay(start.elapsed(), hint, rand::random::<f64>())
            else {
                return Err(give_up(GiveUp::Exhausted));
            };
            tracing::info!(
                exporter = %self.id,
                error = %err,
                interval = ?delay,
                "Exporting failed. Will retry the request after interval."
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return Err(give_up(GiveUp::Shutdown)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use super::*;

    fn cfg(initial_ms: u64, max_ms: u64, total_ms: u64) -> RetryConfig {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(initial_ms),
            randomization_factor: 0.5,
            multiplier: 1.5,
            max_interval: Duration::from_millis(max_ms),
            max_elapsed_time: Duration::from_millis(total_ms),
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let mut b = Backoff::new(&cfg(5000, 30000, 300_000));
        let z = Duration::ZERO;
        // unit = 0.5 is the midpoint: no jitter.
        assert_eq!(
            b.next_delay(z, None, 0.5),
            Some(Duration::from_millis(5000))
        );
        assert_eq!(
            b.next_delay(z, None, 0.5),
            Some(Duration::from_millis(7500))
        );
        assert_eq!(
            b.next_delay(z, None, 0.0),
            Some(Duration::from_millis(5625))
        );
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.next_delay(z, None, 0.5).unwrap();
        }
        assert_eq!(last, Duration::from_secs(30));
        // Extremes of the jitter stay within ±50% of the capped interval.
        assert_eq!(b.next_delay(z, None, 0.0), Some(Duration::from_secs(15)));
        let hi = b.next_delay(z, None, 0.999_999).unwrap();
        assert!(hi < Duration::from_secs(45) && hi > Duration::from_millis(44_999));
    }

    #[test]
    fn backoff_stops_at_the_total_cap_and_zero_means_unlimited() {
        let mut b = Backoff::new(&cfg(5000, 30000, 300_000));
        assert!(b.next_delay(Duration::from_secs(290), None, 0.5).is_some());
        let mut b = Backoff::new(&cfg(5000, 30000, 300_000));
        assert_eq!(b.next_delay(Duration::from_secs(296), None, 0.5), None);
        let mut b = Backoff::new(&cfg(5000, 30000, 0));
        assert!(b
            .next_delay(Duration::from_secs(1_000_000), None, 0.5)
            .is_some());
    }

    #[test]
    fn server_hint_wins_when_longer() {
        let mut b = Backoff::new(&cfg(1000, 30000, 300_000));
        let d = b.next_delay(Duration::ZERO, Some(Duration::from_secs(10)), 0.5);
        assert_eq!(d, Some(Duration::from_secs(10)));
        let d = b.next_delay(Duration::ZERO, Some(Duration::from_millis(1)), 0.5);
        assert_eq!(d, Some(Duration::from_millis(1500)));
        // A hint past the total cap ends retrying.
        let d = b.next_delay(Duration::ZERO, Some(Duration::from_secs(400)), 0.5);
        assert_eq!(d, None);
    }

    fn retrier(c: RetryConfig) -> Retrier {
        Retrier {
            cfg: c,
            timeout: Duration::from_millis(200),
            stop: CancellationToken::new(),
            id: "test".into(),
        }
    }

    #[tokio::test]
    async fn retries_until_success() {
        let r = retrier(cfg(1, 5, 10_000));
        let n = AtomicU32::new(0);
        let out = r
            .run(|| async {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(SendError::retryable("unavailable"))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_is_not_retried() {
        let r = retrier(cfg(1, 5, 10_000));
        let n = AtomicU32::new(0);
        let out: Result<(), _> = r
            .run(|| async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(SendError::permanent("invalid argument"))
            })
            .await;
        let f = out.unwrap_err();
        assert_eq!(f.reason, GiveUp::Permanent);
        assert_eq!(f.attempts, 1);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn disabled_retry_makes_one_attempt() {
        let mut c = cfg(1, 5, 10_000);
        c.enabled = false;
        let r = retrier(c);
        let out: Result<(), _> = r
            .run(|| async { Err(SendError::retryable("unavailable")) })
            .await;
        let f = out.unwrap_err();
        assert_eq!((f.reason, f.attempts), (GiveUp::Exhausted, 1));
    }

    #[tokio::test]
    async fn attempt_timeout_is_retryable_and_total_cap_ends_it() {
        let r = Retrier {
            timeout: Duration::from_millis(20),
            ..retrier(cfg(10, 10, 100))
        };
        let out: Result<(), _> = r
            .run(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            })
            .await;
        let f = out.unwrap_err();
        assert_eq!(f.reason, GiveUp::Exhausted);
        assert!(f.last.message.contains("deadline exceeded"));
        assert!(f.attempts >= 2, "{}", f.attempts);
    }

    #[tokio::test]
    async fn shutdown_interrupts_the_backoff_wait() {
        let r = retrier(cfg(60_000, 60_000, 600_000));
        let stop = r.stop.clone();
        let n = Arc::new(AtomicU32::new(0));
        let n2 = n.clone();
        let task = tokio::spawn(async move {
            r.run(|| {
                n2.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(SendError::retryable("unavailable")) }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        stop.cancel();
        let f = task.await.unwrap().unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(f.reason, GiveUp::Shutdown);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
