//! The Prometheus provider: instant and range queries over the HTTP API
//! (`/api/v1/query`, `/api/v1/query_range`), each bounded by a timeout, with an
//! optional bearer token or basic auth that never reaches a log line or an error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Credentials for the Prometheus API.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

// Hand-written so that a secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "None"),
            Auth::Bearer(_) => write!(f, "Bearer(<set>)"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <set>)"),
        }
    }
}

/// Where Prometheus is and how to talk to it (the `[metrics]` section).
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// `http://host:9090`, up to (not including) `/api/v1`.
    pub url: String,
    pub auth: Auth,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    #[error("could not build the HTTP client for Prometheus: {0}")]
    Client(String),
    #[error("Prometheus at {url} did not answer within {ms} ms")]
    Timeout { url: String, ms: u128 },
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus at {url} refused the credentials ({status})")]
    Unauthorized { url: String, status: u16 },
    #[error("Prometheus refused the query ({status} {kind}): {message}")]
    Query { status: u16, kind: String, message: String },
    #[error("Prometheus at {url} sent an answer that is not its HTTP API: {reason}")]
    BadResponse { url: String, reason: String },
}

/// One series of an instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    /// (unix seconds, value)
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone)]
pub struct Prometheus {
    config: PrometheusConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus").field("config", &self.config).finish()
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorItem>),
    Matrix(Vec<MatrixItem>),
    Scalar((f64, String)),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

/// Prometheus writes sample values as strings, with its own names for the specials.
fn number(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// Answers are small (one value per series); anything bigger is not an answer.
const MAX_BODY: usize = 8 * 1024 * 1024;

impl Prometheus {
    pub fn new(config: PrometheusConfig) -> Result<Prometheus, PromError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| PromError::Client(e.to_string()))?;
        Ok(Prometheus { config, http })
    }

    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// An instant query, evaluated now.
    pub async fn query(&self, query: &str) -> Result<Vec<Sample>, PromError> {
        match self.call("/api/v1/query", &[("query", query.to_string())]).await? {
            Data::Vector(items) => Ok(items
                .into_iter()
                .map(|i| Sample { labels: i.metric, value: number(&i.value.1).unwrap_or(f64::NAN) })
                .collect()),
            Data::Scalar((_, v)) => Ok(vec![Sample { labels: BTreeMap::new(), value: number(&v).unwrap_or(f64::NAN) }]),
            Data::Matrix(_) | Data::String(_) => Err(self.bad("an instant query answered with a matrix or a string")),
        }
    }

    /// A range query from `start` to `end` (unix seconds), one point per `step`.
    pub async fn query_range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, PromError> {
        let params = [
            ("query", query.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{}", step.as_secs_f64().max(0.001))),
        ];
        match self.call("/api/v1/query_range", &params).await? {
            Data::Matrix(items) => Ok(items
                .into_iter()
                .map(|i| RangeSeries {
                    labels: i.metric,
                    points: i.values.into_iter().map(|(t, v)| (t, number(&v).unwrap_or(f64::NAN))).collect(),
                })
                .collect()),
            _ => Err(self.bad("a range query answered with something other than a matrix")),
        }
    }

    fn bad(&self, reason: &str) -> PromError {
        PromError::BadResponse { url: self.config.url.clone(), reason: reason.to_string() }
    }

    async fn call(&self, path: &str, params: &[(&str, String)]) -> Result<Data, PromError> {
        let url = format!("{}{path}", self.config.url);
        let body = serde_urlencoded::to_string(params).map_err(|e| PromError::Client(e.to_string()))?;
        let mut request =
            self.http.post(&url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        request = match &self.config.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
        };
        let base = self.config.url.clone();
        let ms = self.config.timeout.as_millis();
        let fail = |e: reqwest::Error| {
            if e.is_timeout() {
                PromError::Timeout { url: base.clone(), ms }
            } else {
                // The innermost cause ("Connection refused"), without the URL: ours
                // names it already.
                let mut cause: Option<String> = None;
                let mut next = std::error::Error::source(&e);
                while let Some(s) = next {
                    cause = Some(s.to_string());
                    next = s.source();
                }
                let reason = cause.unwrap_or_else(|| e.without_url().to_string());
                PromError::Unreachable { url: base.clone(), reason }
            }
        };
        let response = request.send().await.map_err(fail)?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(PromError::Unauthorized { url: base.clone(), status });
        }
        let bytes = response.bytes().await.map_err(fail)?;
        if bytes.len() > MAX_BODY {
            return Err(self.bad("the answer is larger than 8 MiB"));
        }
        let envelope: Envelope = serde_json::from_slice(&bytes).map_err(|e| {
            let reason = if (200..300).contains(&status) { e.to_string() } else { format!("HTTP {status}") };
            self.bad(&reason)
        })?;
        if envelope.status != "success" {
            return Err(PromError::Query {
                status,
                kind: envelope.error_type.unwrap_or_else(|| "error".into()),
                message: envelope.error.unwrap_or_default(),
            });
        }
        envelope.data.ok_or_else(|| self.bad("a success without data"))
    }
}
