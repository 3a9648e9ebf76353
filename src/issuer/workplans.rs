//! Running a workplan (spec/delegation.md §11): every trust of the plan in
//! one transaction, all or none, and the routing slip that names them.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::IssuerState;
use super::api::{json_body, json_response, respond, verified};
use super::store::{Audit, Trust};
use crate::delegation::slip::{SlipBuilder, WORKFLOW_ID_LEN, slip_expiry};
use crate::delegation::trust_request::WorkplanRun;
use crate::encoding::b64url_encode;
use crate::error::{Error, Result};
use crate::names::UserName;

/// The answer to a workplan run.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkplanRunResult {
    /// the workflow's name
    workflow: String,
    /// this run's id: 16 random bytes, base64url (also in the slip)
    workflow_id: String,
    /// the caller, who delegates
    trustor: String,
    /// Unix seconds: the slip's expiry (the earliest trust expiry, at most one key rotation period)
    expires_at: u64,
    /// the routing slip (spec/delegation.md §10), base64url: send it as `KB-Slip`
    slip: String,
    /// the trusts created, in the plan's order
    trusts: Vec<Trust>,
}

#[utoipa::path(
    post,
    path = "/v1/workplans/run",
    operation_id = "runWorkplan",
    tag = "trusts",
    summary = "Run a workplan: create every trust of a workflow at once and get its routing slip",
    description = "The caller is the trustor of every trust. Each delegation is checked as `POST /v1/trusts` (TC1–TC5 of spec/delegation.md §3) with `audiences` its one audience; the first refusal answers, naming the delegation, and nothing is created. Audited as `trust.create` per trust and `workplan.run`.",
    security(("kbToken" = [], "kbProof" = [])),
    request_body(content = WorkplanRun, content_type = "application/json", example = json!({"workflow": "deploy-instance", "project": "turing", "delegations": [{"trustee": "nova-compute@service", "audience": "https://glance.example", "roles": ["reader"], "uses": 10}]})),
    responses(
        (status = 200, description = "The trusts and the routing slip.", body = WorkplanRunResult, content_type = "application/json")
    )
)]
pub(super) async fn run_workplan(State(state): State<Arc<IssuerState>>, request: Request) -> Response {
    let started = Instant::now();
    let result = async {
        let (parts, verified, body) = verified(request).await?;
        let plan: WorkplanRun = json_body(&parts, &body)?;
        let trustor = UserName::parse(verified.subject())?;
        let actor = trustor.to_string();
        let origin = super::api::origin(&state, &parts, Some(verified.key_thumbprint()));
        let mut tx = state.store.begin().await?;
        let created = create_all(&state, &mut tx, &origin, &trustor, &plan).await;
        let answer = super::trusts::finish(&state, tx, &origin, &actor, "workplan.run", created).await?;
        Ok(json_response(StatusCode::OK, &answer))
    }
    .await;
    respond(&state, "workplans", started, result)
}

/// The trusts of `plan` and their audit records in `tx`, and the slip.
/// The caller commits with the `workplan.run` record.
async fn create_all(
    state: &IssuerState,
    tx: &mut super::store::Tx,
    origin: &super::store::Origin,
    trustor: &UserName,
    plan: &WorkplanRun,
) -> Result<(String, WorkplanRunResult)> {
    let now = state.now();
    let requests = plan.trust_requests()?;
    let mut trusts = Vec::with_capacity(requests.len());
    for (i, request) in requests.into_iter().enumerate() {
        let trust = super::trusts::create(state, tx, trustor, request).await.map_err(|e| {
            Error::new(
                e.code(),
                format!(
                    "delegation {} ({}): {}",
                    i + 1,
                    plan.delegations[i].trustee,
                    e.message()
                ),
            )
        })?;
        tx.record_from(
            origin,
            now as i64,
            &trustor.to_string(),
            "trust.create",
            &trust.id,
            "ok",
        )
        .await?;
        trusts.push(trust);
    }
    let workflow_id: [u8; WORKFLOW_ID_LEN] = crate::random_array()?;
    // Services verify a slip only while its key is published: at least one
    // rotation period after signing (spec/delegation.md §10.3). A slip that
    // claimed longer would be refused as `slip.key_unknown` before its
    // expiry; past that, the user runs the plan again.
    let expires_at = slip_expiry(now, trusts.iter().map(|t| t.expires_at.map(|e| e as u64)))
        .min(now.saturating_add(state.config.rotation_period));
    let mut slip = SlipBuilder::new(
        &state.config.issuer_id,
        &plan.workflow,
        trustor.to_string(),
        now,
        expires_at,
    )
    .workflow_id(workflow_id);
    for (trust, delegation) in trusts.iter().zip(&plan.delegations) {
        slip = slip.hop(trust.trustee.to_string(), delegation.audience.clone(), trust.id.clone());
    }
    // A slip verifiers would refuse (too large for the plan's names) is
    // the request's fault: nothing is committed.
    let slip = state.keys.sign_slip(slip).map_err(|e| match e.code() {
        crate::error::Code::IssueInvalid => Error::new(
            crate::error::Code::TrustInvalid,
            format!("the plan's routing slip cannot be issued: {}", e.message()),
        ),
        _ => e,
    })?;
    let workflow_id = b64url_encode(&workflow_id);
    Ok((
        workflow_id.clone(),
        WorkplanRunResult {
            workflow: plan.workflow.clone(),
            workflow_id,
            trustor: trustor.to_string(),
            expires_at,
            slip: slip.to_base64url(),
            trusts,
        },
    ))
}
