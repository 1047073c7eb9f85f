//! A blocking client for the broker's admin API (what `cloak kbs add-model`, `set-policy`,
//! `remove-model` and `audit` use). HTTPS uses rustls with the aws-lc-rs provider, against the
//! web PKI roots or, with a CA file, only that CA.

use std::sync::Arc;
use std::time::Duration;

use cloak_crypto::key::ModelKey;
use cloak_proto::kbs::fleet::{AddFleetRequest, FleetStatus};
use cloak_proto::kbs::{AddModelRequest, AuditResponse, ErrorBody, SetPolicyRequest};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
use zeroize::Zeroize as _;

use crate::token::AdminToken;

/// How long one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (an audit log can be long).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;

/// An admin client for one broker.
pub struct AdminClient {
    agent: ureq::Agent,
    base: String,
    token: AdminToken,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for the broker at `url` (`http://` or `https://`), authenticating with
    /// `token`; `ca_pem`, if given, is the only CA trusted for an `https` broker.
    pub fn new(url: &str, token: AdminToken, ca_pem: Option<&[u8]>) -> Result<Self, AdminError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(AdminError::Usage(format!(
                "the broker URL must start with http:// or https://, not {url:?}"
            )));
        }
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ));
        if let Some(pem) = ca_pem {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<Certificate<'static>>, _>>()
                .map_err(|e| AdminError::Usage(format!("the CA file is not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(AdminError::Usage("the CA file holds no certificate".into()));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .new_agent();
        Ok(Self { agent, base, token })
    }

    /// `PUT /kbs/v1/admin/models/{name}`.
    pub fn add_model(&self, name: &str, key: &ModelKey, policy: &str) -> Result<(), AdminError> {
        model_name(name)?;
        let mut request = AddModelRequest {
            key: key.secret_bytes().to_vec(),
            policy: policy.to_owned(),
        };
        let sent = self
            .agent
            .put(self.url(&format!("/kbs/v1/admin/models/{name}")))
            .header("authorization", self.authorization())
            .send_json(&request);
        request.key.zeroize();
        self.empty(sent)
    }

    /// `PUT /kbs/v1/admin/models/{name}/policy`.
    pub fn set_policy(&self, name: &str, policy: &str) -> Result<(), AdminError> {
        record_name(name)?;
        let sent = self
            .agent
            .put(self.url(&format!("/kbs/v1/admin/models/{name}/policy")))
            .header("authorization", self.authorization())
            .send_json(SetPolicyRequest {
                policy: policy.to_owned(),
            });
        self.empty(sent)
    }

    /// `DELETE /kbs/v1/admin/models/{name}`.
    pub fn remove_model(&self, name: &str) -> Result<(), AdminError> {
        record_name(name)?;
        let sent = self
            .agent
            .delete(self.url(&format!("/kbs/v1/admin/models/{name}")))
            .header("authorization", self.authorization())
            .call();
        self.empty(sent)
    }

    /// `PUT /kbs/v1/admin/fleets/{name}`: the broker makes the fleet's first key.
    pub fn add_fleet(&self, name: &str, policy: &str) -> Result<FleetStatus, AdminError> {
        model_name(name)?;
        let sent = self
            .agent
            .put(self.url(&format!("/kbs/v1/admin/fleets/{name}")))
            .header("authorization", self.authorization())
            .send_json(AddFleetRequest {
                policy: policy.to_owned(),
            });
        self.json(sent)
    }

    /// `POST /kbs/v1/admin/fleets/{name}/rotate`.
    pub fn rotate_fleet(&self, name: &str) -> Result<FleetStatus, AdminError> {
        model_name(name)?;
        let sent = self
            .agent
            .post(self.url(&format!("/kbs/v1/admin/fleets/{name}/rotate")))
            .header("authorization", self.authorization())
            .send_empty();
        self.json(sent)
    }

    /// `PUT /kbs/v1/admin/fleets/{name}/policy`.
    pub fn set_fleet_policy(&self, name: &str, policy: &str) -> Result<(), AdminError> {
        model_name(name)?;
        let sent = self
            .agent
            .put(self.url(&format!("/kbs/v1/admin/fleets/{name}/policy")))
            .header("authorization", self.authorization())
            .send_json(SetPolicyRequest {
                policy: policy.to_owned(),
            });
        self.empty(sent)
    }

    /// `DELETE /kbs/v1/admin/fleets/{name}`.
    pub fn remove_fleet(&self, name: &str) -> Result<(), AdminError> {
        model_name(name)?;
        let sent = self
            .agent
            .delete(self.url(&format!("/kbs/v1/admin/fleets/{name}")))
            .header("authorization", self.authorization())
            .call();
        self.empty(sent)
    }

    /// `GET /kbs/v1/fleets/{name}` (public).
    pub fn fleet_status(&self, name: &str) -> Result<FleetStatus, AdminError> {
        model_name(name)?;
        let sent = self
            .agent
            .get(self.url(&format!("/kbs/v1/fleets/{name}")))
            .call();
        self.json(sent)
    }

    /// `GET /kbs/v1/admin/audit[?verify=true]`.
    pub fn audit(&self, verify: bool) -> Result<AuditResponse, AdminError> {
        let mut all = AuditResponse {
            records: Vec::new(),
            verification: None,
            next: None,
        };
        self.audit_pages(verify, |page| {
            all.records.extend(page.records);
            if page.verification.is_some() {
                all.verification = page.verification;
            }
            Ok(())
        })?;
        Ok(all)
    }

    /// The audit log a page at a time, oldest first, each page handed to `each` as it arrives
    /// (the first one carrying the check of the whole chain, with `verify`); for logs too large
    /// to hold.
    pub fn audit_pages(
        &self,
        verify: bool,
        mut each: impl FnMut(AuditResponse) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let mut after = 0;
        let mut first = true;
        loop {
            let page = self.audit_page(verify && first, after)?;
            first = false;
            let next = page.next.filter(|n| *n > after);
            each(page)?;
            match next {
                Some(n) => after = n,
                None => return Ok(()),
            }
        }
    }

    fn audit_page(&self, verify: bool, after: u64) -> Result<AuditResponse, AdminError> {
        let path = format!("/kbs/v1/admin/audit?after={after}&verify={verify}");
        let response = self
            .agent
            .get(self.url(&path))
            .header("authorization", self.authorization())
            .call()
            .map_err(unreachable)?;
        let response = check(response)?;
        response
            .into_body()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_json()
            .map_err(|e| AdminError::Protocol(format!("unreadable audit answer: {e}")))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorization(&self) -> String {
        format!("Bearer {}", self.token.expose())
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, AdminError> {
        check(sent.map_err(unreachable)?)?
            .into_body()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_json()
            .map_err(|e| AdminError::Protocol(format!("unreadable answer: {e}")))
    }

    fn empty(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(), AdminError> {
        check(sent.map_err(unreachable)?).map(drop)
    }
}

fn model_name(name: &str) -> Result<(), AdminError> {
    crate::broker::validate_model_name(name).map_err(|e| AdminError::Usage(e.to_string()))
}

/// A model name, or one fleet key generation's record (`fleet:NAME:G`).
fn record_name(name: &str) -> Result<(), AdminError> {
    crate::broker::validate_record_name(name).map_err(|e| AdminError::Usage(e.to_string()))
}

fn unreachable(e: ureq::Error) -> AdminError {
    AdminError::Unreachable(e.to_string())
}

/// Passes a success through; turns an error answer into [`AdminError::Refused`].
fn check(
    response: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, AdminError> {
    let status = response.status().as_u16();
    if response.status().is_success() {
        return Ok(response);
    }
    let body: Option<ErrorBody> = response
        .into_body()
        .with_config()
        .limit(64 * 1024)
        .read_json()
        .ok();
    let (code, message) = body.map_or_else(
        || ("http-error".to_owned(), format!("HTTP status {status}")),
        |b| (b.error, b.message),
    );
    Err(AdminError::Refused {
        status,
        code,
        message,
    })
}

/// Why an admin call failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The broker answered something this client cannot read.
    #[error("unexpected answer from the broker: {0}")]
    Protocol(String),
    /// The broker refused, with its status and stable code.
    #[error("the broker refused ({code}, HTTP {status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The broker's stable code.
        code: String,
        /// The broker's sentence.
        message: String,
    },
    /// The broker could not be reached (connection, TLS, timeout).
    #[error("cannot reach the broker: {0}")]
    Unreachable(String),
    /// Bad arguments (URL, CA file).
    #[error("{0}")]
    Usage(String),
}

impl AdminError {
    /// Whether this is an authentication failure (401).
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Refused { status: 401, .. })
    }

    /// The stable code: the broker's, or `broker-unreachable`, `broker-protocol`, `usage`.
    pub fn code(&self) -> String {
        match self {
            Self::Protocol(_) => "broker-protocol".into(),
            Self::Refused { code, .. } => code.clone(),
            Self::Unreachable(_) => "broker-unreachable".into(),
            Self::Usage(_) => "usage".into(),
        }
    }
}
