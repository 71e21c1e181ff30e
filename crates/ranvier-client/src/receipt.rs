//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /rooms/{roomId}/read_markers`.

use axum::extract::State;
use ranvier_core::Error;
use ranvier_http::{ApiResult, Authed, route};
use ranvier_social::receipts::{READ, READ_PRIVATE, Thread};
use ruma::api::client::{
    read_marker::set_read_marker,
    receipt::create_receipt::{self, v3::ReceiptType},
};
use ruma::events::receipt::ReceiptThread;

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<create_receipt::v3::Request, _, _, _>(router, receipt);
    route::<set_read_marker::v3::Request, _, _, _>(router, read_markers)
}

async fn receipt(
    State(state): State<AppState>,
    req: Authed<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    let body = &req.body;
    let thread = match &body.thread {
        ReceiptThread::Unthreaded => Thread::Unthreaded,
        other => Thread::parse(other.as_str())?,
    };
    match &body.receipt_type {
        // `m.fully_read` is the read marker under another name; it has no threads.
        ReceiptType::FullyRead => {
            if thread != Thread::Unthreaded {
                return Err(Error::invalid_param("`m.fully_read` takes no `thread_id`").into());
            }
            state.social.set_fully_read(&body.room_id, req.user_id(), &body.event_id).await?;
        }
        ReceiptType::Read => {
            state.social.put_receipt(&body.room_id, req.user_id(), READ, &body.event_id, thread).await?
        }
        ReceiptType::ReadPrivate => {
            state.social.put_receipt(&body.room_id, req.user_id(), READ_PRIVATE, &body.event_id, thread).await?
        }
        other => return Err(Error::invalid_param(format!("Unknown receipt type {}", other.as_str())).into()),
    }
    Ok(create_receipt::v3::Response::new().into())
}

async fn read_markers(
    State(state): State<AppState>,
    req: Authed<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let body = &req.body;
    state
        .social
        .set_read_markers(
            &body.room_id,
            req.user_id(),
            body.fully_read.as_deref(),
            body.read_receipt.as_deref(),
            body.private_read_receipt.as_deref(),
        )
        .await?;
    Ok(set_read_marker::v3::Response::new().into())
}
