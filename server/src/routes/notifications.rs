//! `/api/notifications`: the caller's notifications (the original's routes and shape), marking
//! one or all read. The unread count also arrives live on `GET /api/events`.

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use engine::notifications::{self, NotificationKind, NotificationView};
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::error::{ApiError, Envelope, ErrorBody, ok};
use crate::state::AppState;

/// `/api/notifications`.
pub fn router() -> super::Api {
    use axum::routing::{get, patch, post};
    super::Api::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/{id}/read", patch(read).post(read))
        .route("/api/notifications/read-all", post(read_all))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// true: unread ones only.
    unread: Option<String>,
    /// 1–100, default 20.
    limit: Option<u32>,
    /// From 1.
    page: Option<u32>,
    /// One kind (`job_completed`, `budget_warning` …).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct NotificationList {
    notifications: Vec<NotificationView>,
    unread_count: i64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MarkedRead {
    id: Uuid,
    read: bool,
    unread_count: i64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AllMarkedRead {
    marked: u64,
    unread_count: i64,
}

/// `GET /api/notifications?unread&limit&page&type`: `{notifications, unread_count}`.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications", params(ListQuery),
    responses((status = 200, body = Envelope<NotificationList>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let mut fields = engine::validation::FieldErrors::new();
    let unread_only = match query.unread.as_deref() {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => {
            fields.add("unread", "Use true or false.");
            false
        }
    };
    let (page, limit) = super::paging(query.page, query.limit, &mut fields);
    let kind = match query.kind.as_deref() {
        None | Some("") => None,
        Some(name) => {
            let kind = NotificationKind::parse(name);
            if kind.is_none() {
                fields.add(
                    "type",
                    format!(
                        "Use one of: {}.",
                        NotificationKind::names(NotificationKind::ALL).join(", ")
                    ),
                );
            }
            kind
        }
    };
    fields.into_result().map_err(ApiError::Validation)?;
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    let rows = notifications::list(
        &mut tx,
        user.id,
        unread_only,
        kind,
        i64::from(limit),
        i64::from(page - 1) * i64::from(limit),
    )
    .await
    .map_err(ApiError::internal)?;
    let unread = notifications::unread_count(&mut tx, user.id)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    let items: Vec<NotificationView> = rows.into_iter().map(Into::into).collect();
    Ok(ok(NotificationList {
        notifications: items,
        unread_count: unread,
    }))
}

/// `PATCH /api/notifications/{id}/read` (POST too): marks one read; open pages get the new
/// unread count live.
#[utoipa::path(method(patch, post), path = "/api/notifications/{id}/read", tag = "notifications", params(("id" = Uuid, Path)),
    responses((status = 200, body = Envelope<MarkedRead>), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    if !notifications::mark_read(&mut tx, user.id, id)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::NotFound);
    }
    let unread = notifications::unread_count(&mut tx, user.id)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(ok(MarkedRead {
        id,
        read: true,
        unread_count: unread,
    }))
}

/// `POST /api/notifications/read-all`.
#[utoipa::path(post, path = "/api/notifications/read-all", tag = "notifications",
    responses((status = 200, body = Envelope<AllMarkedRead>), (status = 401, body = ErrorBody)))]
pub async fn read_all(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<impl IntoResponse, ApiError> {
    let mut tx = state.db.tenant(user.id).await.map_err(ApiError::internal)?;
    let marked = notifications::mark_all_read(&mut tx, user.id)
        .await
        .map_err(ApiError::internal)?;
    tx.commit().await.map_err(ApiError::internal)?;
    Ok(ok(AllMarkedRead {
        marked,
        unread_count: 0,
    }))
}
