//! The HTTP client of the log's verifiers (`attestca log verify`, `attestca verify-device`):
//! what they fetch comes from a server they do not trust, so every answer is bounded in size
//! and time.

use std::time::Duration;

/// The largest answer read: a full entry bundle of 256 entries at their 64 KiB limit.
pub const MAX_ANSWER_BYTES: usize = 256 * (2 + 65_535);

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A bounded HTTP client.
#[derive(Clone)]
pub struct BoundedClient {
    client: reqwest::Client,
    max_bytes: usize,
}

impl BoundedClient {
    /// A client for a log's tiles and entry bundles: [`MAX_ANSWER_BYTES`], 30 s a request.
    pub fn new() -> Result<Self, String> {
        Self::with_limits(REQUEST_TIMEOUT, MAX_ANSWER_BYTES)
    }

    /// A client whose requests each take `timeout` and read `max_bytes` at most.
    pub fn with_limits(timeout: Duration, max_bytes: usize) -> Result<Self, String> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            max_bytes,
        })
    }

    /// The body of a GET; `Ok(None)` on 404.
    pub async fn get(&self, url: &str) -> Result<Option<Vec<u8>>, String> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        read(url, response, self.max_bytes).await.map(Some)
    }

    /// The body of a GET that must succeed.
    pub async fn get_found(&self, url: &str) -> Result<Vec<u8>, String> {
        self.get(url)
            .await?
            .ok_or_else(|| format!("{url}: HTTP 404 Not Found"))
    }

    /// The body of a POST.
    pub async fn post(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, String> {
        let (status, answer) = self.post_answer(url, content_type, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!("{url}: HTTP {status}"));
        }
        Ok(answer)
    }

    /// The status and body of a POST, whatever the status.
    pub async fn post_answer(
        &self,
        url: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        Ok((status, read_body(url, response, self.max_bytes).await?))
    }
}

async fn read(url: &str, response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, String> {
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    read_body(url, response, max_bytes).await
}

async fn read_body(
    url: &str,
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(format!("{url}: answer over {max_bytes} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The core's [`attestca_core::relying_party::Fetch`] over a [`BoundedClient`], for code that
/// runs on a blocking thread of a Tokio runtime (`spawn_blocking`).
pub struct BlockingFetch {
    client: BoundedClient,
    runtime: tokio::runtime::Handle,
}

impl BlockingFetch {
    pub fn new(client: BoundedClient, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }
}

impl attestca_core::relying_party::Fetch for BlockingFetch {
    fn get(&mut self, url: &str) -> Result<Option<Vec<u8>>, String> {
        self.runtime.block_on(self.client.get(url))
    }

    fn post(&mut self, url: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        self.runtime
            .block_on(self.client.post(url, content_type, body))
    }
}
