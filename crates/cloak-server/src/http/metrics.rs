//! `GET /metrics`: Prometheus text (OpenMetrics), on the attested listener and on the optional
//! plain-HTTP one. Labels are model names and outcome classes only, never request content.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::service::Service;

pub(super) async fn render(State(service): State<Arc<Service>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        service.render_metrics(),
    )
        .into_response()
}
