//! Push notifications: `/pushrules` (the whole ruleset, one rule, adding, deleting, `enabled`
//! and `actions`), `/pushers` and `/pushers/set`, and `/notifications`. The work is
//! `ranvier-push`'s.

use axum::extract::State;
use ranvier_http::{ApiResult, Authed, route};
use ruma::api::client::push::{
    delete_pushrule, get_notifications, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled,
    get_pushrules_all, get_pushrules_global_scope, set_pusher, set_pushrule, set_pushrule_actions,
    set_pushrule_enabled,
};

use crate::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = route::<get_pushrules_all::v3::Request, _, _, _>(router, all_rules);
    let router = route::<get_pushrules_global_scope::v3::Request, _, _, _>(router, global_rules);
    let router = route::<get_pushrule::v3::Request, _, _, _>(router, get_rule);
    let router = route::<set_pushrule::v3::Request, _, _, _>(router, set_rule);
    let router = route::<delete_pushrule::v3::Request, _, _, _>(router, delete_rule);
    let router = route::<get_pushrule_enabled::v3::Request, _, _, _>(router, get_enabled);
    let router = route::<set_pushrule_enabled::v3::Request, _, _, _>(router, set_enabled);
    let router = route::<get_pushrule_actions::v3::Request, _, _, _>(router, get_actions);
    let router = route::<set_pushrule_actions::v3::Request, _, _, _>(router, set_actions);
    let router = route::<get_pushers::v3::Request, _, _, _>(router, pushers);
    let router = route::<set_pusher::v3::Request, _, _, _>(router, set_pusher);
    route::<get_notifications::v3::Request, _, _, _>(router, notifications)
}

async fn all_rules(
    State(state): State<AppState>,
    req: Authed<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    let ruleset = state.push.ruleset(req.user_id()).await?;
    Ok(get_pushrules_all::v3::Response::new((*ruleset).clone()).into())
}

async fn global_rules(
    State(state): State<AppState>,
    req: Authed<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    let ruleset = state.push.ruleset(req.user_id()).await?;
    Ok(get_pushrules_global_scope::v3::Response::new((*ruleset).clone()).into())
}

async fn get_rule(
    State(state): State<AppState>,
    req: Authed<get_pushrule::v3::Request>,
) -> ApiResult<get_pushrule::v3::Response> {
    let body = &req.body;
    let rule = state.push.rule(req.user_id(), body.kind.clone(), &body.rule_id).await?;
    Ok(get_pushrule::v3::Response::new(rule).into())
}

async fn set_rule(
    State(state): State<AppState>,
    req: Authed<set_pushrule::v3::Request>,
) -> ApiResult<set_pushrule::v3::Response> {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    state.push.set_rule(&user_id, body.rule, body.before.as_deref(), body.after.as_deref()).await?;
    Ok(set_pushrule::v3::Response::new().into())
}

async fn delete_rule(
    State(state): State<AppState>,
    req: Authed<delete_pushrule::v3::Request>,
) -> ApiResult<delete_pushrule::v3::Response> {
    let body = &req.body;
    state.push.delete_rule(req.user_id(), body.kind.clone(), &body.rule_id).await?;
    Ok(delete_pushrule::v3::Response::new().into())
}

async fn get_enabled(
    State(state): State<AppState>,
    req: Authed<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let body = &req.body;
    let rule = state.push.rule(req.user_id(), body.kind.clone(), &body.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled).into())
}

async fn set_enabled(
    State(state): State<AppState>,
    req: Authed<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let body = &req.body;
    state.push.set_rule_enabled(req.user_id(), body.kind.clone(), &body.rule_id, body.enabled).await?;
    Ok(set_pushrule_enabled::v3::Response::new().into())
}

async fn get_actions(
    State(state): State<AppState>,
    req: Authed<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let body = &req.body;
    let rule = state.push.rule(req.user_id(), body.kind.clone(), &body.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions).into())
}

async fn set_actions(
    State(state): State<AppState>,
    req: Authed<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let user_id = req.user_id().to_owned();
    let body = req.body;
    state.push.set_rule_actions(&user_id, body.kind, &body.rule_id, body.actions).await?;
    Ok(set_pushrule_actions::v3::Response::new().into())
}

async fn pushers(
    State(state): State<AppState>,
    req: Authed<get_pushers::v3::Request>,
) -> ApiResult<get_pushers::v3::Response> {
    let pushers = state.push.pushers(req.user_id()).await?;
    Ok(get_pushers::v3::Response::new(pushers).into())
}

async fn set_pusher(
    State(state): State<AppState>,
    req: Authed<set_pusher::v3::Request>,
) -> ApiResult<set_pusher::v3::Response> {
    let identity = req.identity;
    state.push.set_pusher(&identity.user_id, &identity.device_id, req.body.action).await?;
    Ok(set_pusher::v3::Response::new().into())
}

async fn notifications(
    State(state): State<AppState>,
    req: Authed<get_notifications::v3::Request>,
) -> ApiResult<get_notifications::v3::Response> {
    let body = &req.body;
    let response =
        state.push.notifications(req.user_id(), body.from.as_deref(), body.limit, body.only.as_deref()).await?;
    Ok(response.into())
}
