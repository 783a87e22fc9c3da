//! Requests to Google: one HTTPS client, each call retried on transient
//! failures (network, HTTP 5xx, 429) with exponential backoff and full jitter,
//! `Retry-After` honoured, under one deadline per mint
//! ([`Retry`]); replies read whole (capped) into memory
//! that is wiped on drop. Credentials go over HTTPS only, plain http only to
//! this machine (emulators).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use touchgate::text::one_line;
use zeroize::Zeroizing;

use super::advice::MAX_MESSAGE_CHARS;
use crate::clock::Clock;
use crate::upstream::retry::{parse_retry_after, Retry, Sleeper, TokioSleeper};
use crate::upstream::{attempts_text, UpstreamError};

/// Longest a single request may take (the mint's deadline usually ends it sooner).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of establishing the connection (TCP + TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies larger than this are refused (a token reply is well under 4 KiB).
const MAX_REPLY_BYTES: usize = 1 << 20;
/// A request that timed out this close to the deadline ran out of it.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// The HTTPS client and how hard to try it: what every request to Google
/// goes through.
pub(super) struct Http {
    /// The client, or why it could not be built (reported at mint time).
    client: Result<Client, String>,
    retry: Retry,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
}

impl Http {
    /// Retries as `retry` says, waiting for real.
    pub(super) fn new(retry: Retry, clock: Arc<dyn Clock>) -> Self {
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("touchgate/", env!("CARGO_PKG_VERSION")))
            // Google's endpoints do not redirect; never carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e));
        Http {
            client,
            retry,
            clock,
            sleeper: Arc::new(TokioSleeper),
        }
    }

    pub(super) fn set_sleeper(&mut self, sleeper: Arc<dyn Sleeper>) {
        self.sleeper = sleeper;
    }

    pub(super) fn set_retry(&mut self, retry: Retry) {
        self.retry = retry;
    }

    pub(super) fn retry(&self) -> Retry {
        self.retry
    }

    /// The deadline of one mint, starting now.
    pub(super) fn budget(&self) -> Budget {
        Budget::start(self.retry.deadline)
    }

    /// Sends what `build` makes, again on transient failures (network, 5xx, 429)
    /// while attempts and the deadline last. Any other reply is returned as is.
    pub(super) async fn call(
        &self,
        api: Api,
        url: &str,
        budget: &Budget,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Reply, UpstreamError> {
        let http = self.client()?;
        let mut attempts = 0u32;
        let mut last: Option<Failure> = None;
        loop {
            let remaining = budget.remaining();
            if remaining.is_zero() {
                return Err(deadline_error(api, url, budget.deadline, attempts, &last));
            }
            attempts += 1;
            let builder = build(http).timeout(remaining.min(REQUEST_TIMEOUT));
            let failure = match send(url, builder, self.clock.unix_now()).await {
                Ok(reply) if transient_status(reply.status) => Failure::Status {
                    code: reply.status.as_u16(),
                    retry_after: reply.retry_after,
                },
                Ok(reply) => return Ok(reply),
                Err(SendError::Fatal(e)) => return Err(e),
                Err(SendError::Network { timed_out, .. })
                    if timed_out && budget.remaining() <= DEADLINE_SLACK =>
                {
                    return Err(deadline_error(api, url, budget.deadline, attempts, &last));
                }
                Err(SendError::Network { reason, .. }) => Failure::Network(reason),
            };
            if attempts >= self.retry.max_attempts {
                return Err(exhausted(api, url, &failure, attempts, None));
            }
            let (delay, asked) = match &failure {
                Failure::Status {
                    retry_after: Some(d),
                    ..
                } => (*d, true),
                _ => (self.retry.backoff(attempts + 1), false),
            };
            if delay >= budget.remaining() {
                let beyond = asked.then_some((delay, budget.deadline));
                return Err(exhausted(api, url, &failure, attempts, beyond));
            }
            tracing::warn!(
                endpoint = url,
                attempt = attempts,
                failure = %failure,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "Google failed transiently; trying again"
            );
            last = Some(failure);
            self.sleeper.sleep(delay).await;
        }
    }

    fn client(&self) -> Result<&Client, UpstreamError> {
        self.client.as_ref().map_err(|e| {
            UpstreamError::Protocol(format!(
                "cannot set up the HTTPS client ({e}): check the system's CA certificates"
            ))
        })
    }
}

/// The time one mint may still take.
pub(super) struct Budget {
    started: tokio::time::Instant,
    deadline: Duration,
}

impl Budget {
    fn start(deadline: Duration) -> Self {
        Budget {
            started: tokio::time::Instant::now(),
            deadline,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.started.elapsed())
    }
}

/// Which Google API a call went to, for messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Api {
    Token,
    Iam,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Token => "Google's token endpoint",
            Api::Iam => "Google's IAM Credentials API",
        }
    }
}

/// A transient failure of one attempt.
enum Failure {
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    Network(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status { code, .. } => write!(f, "HTTP {code}"),
            Failure::Network(reason) => f.write_str(reason),
        }
    }
}

/// 5xx (but 501, which will not change) and 429 are worth another try.
fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// Out of attempts (or of time for the next wait: `beyond` = what Google asked
/// to wait, and the deadline).
fn exhausted(
    api: Api,
    url: &str,
    failure: &Failure,
    attempts: u32,
    beyond: Option<(Duration, Duration)>,
) -> UpstreamError {
    match failure {
        Failure::Network(reason) => UpstreamError::Network {
            url: url.to_owned(),
            reason: reason.clone(),
            attempts,
        },
        Failure::Status { code, .. } => {
            let wait = match beyond {
                Some((asked, deadline)) => format!(
                    "; it asked to wait {}, beyond the {} deadline",
                    secs_text(asked),
                    secs_text(deadline)
                ),
                None => String::new(),
            };
            UpstreamError::Unavailable {
                message: format!(
                    "{} {url} kept failing (HTTP {code} after {}{wait}): try again later",
                    api.name(),
                    attempts_text(attempts)
                ),
                attempts,
            }
        }
    }
}

fn deadline_error(
    api: Api,
    url: &str,
    deadline: Duration,
    attempts: u32,
    last: &Option<Failure>,
) -> UpstreamError {
    let last = match last {
        Some(f) if attempts > 1 => format!("; before that: {f}"),
        _ => String::new(),
    };
    UpstreamError::Unavailable {
        message: format!(
            "{} {url} did not answer within the {} deadline ({}{last}): try again later, or \
             raise deadline in the [google] config",
            api.name(),
            secs_text(deadline),
            attempts_text(attempts)
        ),
        attempts,
    }
}

/// `20s`, `1.5s`.
fn secs_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A whole reply, its body in memory that is wiped on drop.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    retry_after: Option<Duration>,
    pub(super) body: Zeroizing<Vec<u8>>,
}

enum SendError {
    /// Not worth another try (a bad URL, a huge reply).
    Fatal(UpstreamError),
    Network {
        reason: String,
        timed_out: bool,
    },
}

/// Sends, and reads the whole reply (capped).
async fn send(url: &str, builder: RequestBuilder, now_unix: u64) -> Result<Reply, SendError> {
    let mut response = builder.send().await.map_err(|e| network_error(url, &e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now_unix));
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(url, &e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(SendError::Fatal(UpstreamError::Protocol(format!(
                "{url} answered HTTP {status} with more than {MAX_REPLY_BYTES} bytes: is this \
                 a Google endpoint?"
            ))));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

fn network_error(url: &str, e: &reqwest::Error) -> SendError {
    if e.is_builder() {
        return SendError::Fatal(UpstreamError::Protocol(format!(
            "{url} is not a usable URL: fix the endpoint in the config or the credential file"
        )));
    }
    if e.is_timeout() {
        return SendError::Network {
            reason: "no answer in time".to_owned(),
            timed_out: true,
        };
    }
    SendError::Network {
        reason: error_chain(e),
        timed_out: false,
    }
}

/// The causes of `e`, most specific last, on one line (reqwest's own top-level
/// message only repeats the URL).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cause = c.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    one_line(&parts.join(": "), MAX_MESSAGE_CHARS)
}

/// Credentials go to Google over HTTPS only; plain http only to this machine
/// (emulators).
pub(super) fn check_url(url: &str) -> Result<(), UpstreamError> {
    let parsed = Url::parse(url).map_err(|_| {
        UpstreamError::Protocol(format!(
            "{} is not a valid URL: fix the endpoint in the config or the credential file",
            one_line(url, 200)
        ))
    })?;
    let loopback = parsed.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("localhost")
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(UpstreamError::Protocol(format!(
            "refusing to send credentials to {}: use an https:// endpoint (plain http is \
             allowed only to 127.0.0.1, [::1] or localhost)",
            one_line(url, 200)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://oauth2.googleapis.com/token").is_ok());
        assert!(check_url("http://127.0.0.1:8080/token").is_ok());
        assert!(check_url("http://localhost/token").is_ok());
        assert!(check_url("http://[::1]:1/token").is_ok());
        assert!(check_url("http://oauth2.googleapis.com/token").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn which_statuses_are_retried() {
        for code in [429, 500, 502, 503, 504] {
            assert!(
                transient_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [200, 400, 401, 403, 404, 409, 501] {
            assert!(
                !transient_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn out_of_attempts_messages() {
        let url = "https://oauth2.googleapis.com/token";
        let busy = Failure::Status {
            code: 503,
            retry_after: None,
        };
        assert_eq!(
            exhausted(Api::Token, url, &busy, 4, None).to_string(),
            "Google's token endpoint https://oauth2.googleapis.com/token kept failing (HTTP 503 \
             after 4 attempts): try again later"
        );
        let limited = Failure::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(90)),
        };
        let e = exhausted(
            Api::Iam,
            url,
            &limited,
            1,
            Some((Duration::from_secs(90), Duration::from_millis(20_500))),
        );
        assert_eq!(
            e.to_string(),
            "Google's IAM Credentials API https://oauth2.googleapis.com/token kept failing (HTTP \
             429 after 1 attempt; it asked to wait 90s, beyond the 20.5s deadline): try again \
             later"
        );
        assert!(e.is_transient());
        let e = deadline_error(Api::Token, url, Duration::from_secs(20), 3, &Some(busy));
        assert_eq!(
            e.to_string(),
            "Google's token endpoint https://oauth2.googleapis.com/token did not answer within \
             the 20s deadline (3 attempts; before that: HTTP 503): try again later, or raise \
             deadline in the [google] config"
        );
        let net = Failure::Network("connection reset".into());
        assert_eq!(
            exhausted(Api::Token, url, &net, 2, None),
            UpstreamError::Network {
                url: url.into(),
                reason: "connection reset".into(),
                attempts: 2
            }
        );
    }
}
