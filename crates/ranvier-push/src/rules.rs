//! Each user's push rules and the `/pushrules` operations.
//!
//! A user's ruleset is ruma's server defaults (`Ruleset::server_default`) with the user's
//! changes applied: the `enabled` flag and actions of default rules, and the user's own rules
//! in their order. It is stored whole as the `m.push_rules` global account data (`{"global":
//! ruleset}`), which is how clients read it from `/sync`, and merged again with the current
//! defaults when loaded, so that a newer set of server defaults reaches existing users.
//!
//! Loaded rulesets are cached in memory; every change goes through [`Push::update_rules`],
//! which writes the account data and replaces the cached copy, one change at a time.
//!
//! Most users never change their rules. Their server defaults differ only in two rules that
//! name the user (`.m.rule.invite_for_me`, `.m.rule.is_user_mention`), so the cache keeps one
//! copy of the defaults for all of them ([`UserRules::Defaults`]) and evaluation builds those
//! two rules for the user it runs for. A ruleset of its own would take about 3 KB per user, for
//! every member of every room a message is evaluated in.

use std::{collections::HashMap, sync::Arc};

use ranvier_core::{Error, Result, error::ErrorKind};
use ruma::{
    OwnedUserId, UserId,
    api::client::push::PushRule,
    push::{
        Action, AnyPushRuleRef, ConditionalPushRule, FlattenedJson, InsertPushRuleError, NewConditionalPushRule,
        NewPatternedPushRule, NewPushRule, NewSimplePushRule, PredefinedOverrideRuleId, PushConditionRoomCtx,
        RemovePushRuleError, RuleKind, Ruleset,
    },
    user_id,
};
use serde_json::{Value, json};

use crate::Push;

/// The account data type that holds a user's push rules.
pub const PUSH_RULES: &str = "m.push_rules";

/// How many users' rulesets the cache keeps before it starts over.
const CACHE_USERS: usize = 50_000;

/// The in-memory rulesets and the lock that orders changes to them.
pub(crate) struct RuleCache {
    /// `None` for a user with nothing stored: [`RuleCache::defaults`] applies.
    rulesets: parking_lot::Mutex<HashMap<OwnedUserId, Option<Arc<Ruleset>>>>,
    /// The server defaults, built for a placeholder user; see [`UserRules::Defaults`].
    defaults: Ruleset,
    writes: tokio::sync::Mutex<()>,
}

impl Default for RuleCache {
    fn default() -> Self {
        Self {
            rulesets: parking_lot::Mutex::default(),
            defaults: Ruleset::server_default(user_id!("@defaults:ranvier.invalid")),
            writes: tokio::sync::Mutex::default(),
        }
    }
}

/// A user's rules, as evaluation uses them.
pub enum UserRules<'a> {
    /// Nothing stored: the server defaults. The two default rules that name a user are those
    /// of a placeholder here; [`UserRules::actions`] runs the user's own instead.
    Defaults(&'a Ruleset),
    /// The user's stored rules, merged with the defaults.
    Stored(Arc<Ruleset>),
}

impl UserRules<'_> {
    /// The actions of the first of `user_id`'s rules that applies to `event` (none if no rule
    /// does). `context` is the user's.
    pub async fn actions(&self, user_id: &UserId, event: &FlattenedJson, context: &PushConditionRoomCtx) -> &[Action] {
        match self {
            UserRules::Stored(ruleset) => {
                for rule in ruleset.iter() {
                    if rule.applies(event, context).await {
                        return rule.actions();
                    }
                }
            }
            UserRules::Defaults(defaults) => {
                for rule in defaults.iter() {
                    let own = match rule.rule_id() {
                        id if id == PredefinedOverrideRuleId::InviteForMe.as_str() => {
                            Some(ConditionalPushRule::invite_for_me(user_id))
                        }
                        id if id == PredefinedOverrideRuleId::IsUserMention.as_str() => {
                            Some(ConditionalPushRule::is_user_mention(user_id))
                        }
                        _ => None,
                    };
                    let applies = match &own {
                        Some(own) => AnyPushRuleRef::Override(own).applies(event, context).await,
                        None => rule.applies(event, context).await,
                    };
                    if applies {
                        // The user's own copy has the same actions as the placeholder's.
                        return rule.actions();
                    }
                }
            }
        }
        &[]
    }
}

impl Push {
    /// A user's push rules for evaluation (from the cache, else loaded and cached).
    pub async fn user_rules(&self, user_id: &UserId) -> Result<UserRules<'_>> {
        let cache = &self.inner.rules;
        let cached = cache.rulesets.lock().get(user_id).cloned();
        let ruleset = match cached {
            Some(ruleset) => ruleset,
            None => {
                let stored = self.store().get_account_data(user_id.as_str(), "", PUSH_RULES).await?;
                let ruleset = stored.map(|stored| Arc::new(load(user_id, Some(&stored))));
                let mut rulesets = cache.rulesets.lock();
                if rulesets.len() >= CACHE_USERS {
                    rulesets.clear();
                }
                rulesets.entry(user_id.to_owned()).or_insert(ruleset).clone()
            }
        };
        Ok(match ruleset {
            Some(ruleset) => UserRules::Stored(ruleset),
            None => UserRules::Defaults(&cache.defaults),
        })
    }

    /// A user's push rules, whole (the server defaults are built for a user who has nothing
    /// stored).
    pub async fn ruleset(&self, user_id: &UserId) -> Result<Arc<Ruleset>> {
        Ok(match self.user_rules(user_id).await? {
            UserRules::Stored(ruleset) => ruleset,
            UserRules::Defaults(_) => Arc::new(Ruleset::server_default(user_id)),
        })
    }

    /// The content of a user's `m.push_rules` account data: `{"global": ruleset}`.
    pub async fn rules_content(&self, user_id: &UserId) -> Result<Value> {
        Ok(content(&*self.ruleset(user_id).await?))
    }

    /// Apply `change` to a user's rules and store the result.
    pub async fn update_rules(&self, user_id: &UserId, change: impl FnOnce(&mut Ruleset) -> Result<()>) -> Result<()> {
        let _one_at_a_time = self.inner.rules.writes.lock().await;
        let mut ruleset = (*self.ruleset(user_id).await?).clone();
        change(&mut ruleset)?;
        let text = content(&ruleset).to_string();
        self.store().set_account_data(user_id.as_str(), "", PUSH_RULES, &text).await?;
        self.inner.rules.rulesets.lock().insert(user_id.to_owned(), Some(Arc::new(ruleset)));
        Ok(())
    }

    /// Drop a user's cached rules (their account data was deleted).
    pub fn forget_rules(&self, user_id: &UserId) {
        self.inner.rules.rulesets.lock().remove(user_id);
    }

    /// `GET /pushrules/global/{kind}/{ruleId}`.
    pub async fn rule(&self, user_id: &UserId, kind: RuleKind, rule_id: &str) -> Result<PushRule> {
        let ruleset = self.ruleset(user_id).await?;
        ruleset.get(kind, rule_id).map(PushRule::from).ok_or_else(rule_not_found)
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}`: add a rule or replace one of the user's rules.
    pub async fn set_rule(
        &self,
        user_id: &UserId,
        rule: NewPushRule,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<()> {
        let rule_id = rule.rule_id();
        if rule_id.is_empty() {
            return Err(Error::invalid_param("The rule id must not be empty"));
        }
        if rule_id.contains('\0') {
            return Err(Error::invalid_param("The rule id must not contain NUL characters"));
        }
        if let NewPushRule::Override(NewConditionalPushRule { conditions, .. })
        | NewPushRule::Underride(NewConditionalPushRule { conditions, .. }) = &rule
            && conditions.iter().any(|condition| matches!(condition, ruma::push::PushCondition::_Custom(_)))
        {
            return Err(Error::bad_json("Unknown push condition kind"));
        }
        self.update_rules(user_id, |ruleset| {
            ruleset.insert(rule, after, before).map_err(|error| match error {
                InsertPushRuleError::ServerDefaultRuleId => {
                    Error::invalid_param("Rule ids starting with `.` are reserved for server-default rules")
                }
                InsertPushRuleError::InvalidRuleId => {
                    Error::invalid_param("Rule ids may not contain slashes or backslashes")
                }
                InsertPushRuleError::RelativeToServerDefaultRule => {
                    Error::invalid_param("A rule cannot be placed relative to a server-default rule")
                }
                InsertPushRuleError::UnknownRuleId => Error::matrix(
                    ErrorKind::Unknown,
                    format!("before/after rule not found: {}", before.or(after).unwrap_or_default()),
                ),
                InsertPushRuleError::BeforeHigherThanAfter => {
                    Error::invalid_param("`before` names a rule of higher priority than `after`")
                }
                _ => Error::invalid_param(error.to_string()),
            })
        })
        .await
    }

    /// `DELETE /pushrules/global/{kind}/{ruleId}`.
    pub async fn delete_rule(&self, user_id: &UserId, kind: RuleKind, rule_id: &str) -> Result<()> {
        self.update_rules(user_id, |ruleset| {
            ruleset.remove(kind, rule_id).map_err(|error| match error {
                RemovePushRuleError::ServerDefault => Error::invalid_param("Server-default rules cannot be deleted"),
                _ => rule_not_found(),
            })
        })
        .await
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}/enabled`.
    pub async fn set_rule_enabled(&self, user_id: &UserId, kind: RuleKind, rule_id: &str, enabled: bool) -> Result<()> {
        self.update_rules(user_id, |ruleset| ruleset.set_enabled(kind, rule_id, enabled).map_err(|_| rule_not_found()))
            .await
    }

    /// `PUT /pushrules/global/{kind}/{ruleId}/actions`.
    pub async fn set_rule_actions(
        &self,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> Result<()> {
        self.update_rules(user_id, |ruleset| ruleset.set_actions(kind, rule_id, actions).map_err(|_| rule_not_found()))
            .await
    }
}

fn rule_not_found() -> Error {
    Error::not_found("Unknown push rule")
}

/// `{"global": ruleset}`.
pub fn content(ruleset: &Ruleset) -> Value {
    json!({ "global": ruleset })
}

/// A user's ruleset from their stored `m.push_rules` content (or the server defaults).
pub fn load(user_id: &UserId, stored: Option<&str>) -> Ruleset {
    let stored = stored
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|mut content| serde_json::from_value::<Ruleset>(content["global"].take()).ok());
    match stored {
        Some(stored) => merge(user_id, stored),
        None => Ruleset::server_default(user_id),
    }
}

/// The server defaults with what `stored` changed: the state and actions of default rules, and
/// the user's own rules in their stored order.
pub fn merge(user_id: &UserId, stored: Ruleset) -> Ruleset {
    let mut merged = Ruleset::server_default(user_id);
    let mut own: Vec<(NewPushRule, bool)> = Vec::new();

    let mut conditional = |kind: RuleKind, rules: Vec<ConditionalPushRule>, own: &mut Vec<(NewPushRule, bool)>| {
        for rule in rules {
            if rule.rule_id.starts_with('.') {
                let _ = merged.set_enabled(kind.clone(), &rule.rule_id, rule.enabled);
                let _ = merged.set_actions(kind.clone(), &rule.rule_id, rule.actions);
            } else {
                let new = NewConditionalPushRule::new(rule.rule_id, rule.conditions, rule.actions);
                let new =
                    if kind == RuleKind::Override { NewPushRule::Override(new) } else { NewPushRule::Underride(new) };
                own.push((new, rule.enabled));
            }
        }
    };
    conditional(RuleKind::Override, stored.override_.into_iter().collect(), &mut own);
    conditional(RuleKind::Underride, stored.underride.into_iter().collect(), &mut own);

    for rule in stored.content {
        if rule.rule_id.starts_with('.') {
            let _ = merged.set_enabled(RuleKind::Content, &rule.rule_id, rule.enabled);
            let _ = merged.set_actions(RuleKind::Content, &rule.rule_id, rule.actions);
        } else {
            own.push((
                NewPushRule::Content(NewPatternedPushRule::new(rule.rule_id, rule.pattern, rule.actions)),
                rule.enabled,
            ));
        }
    }
    for rule in stored.room {
        own.push((NewPushRule::Room(NewSimplePushRule::new(rule.rule_id, rule.actions)), rule.enabled));
    }
    for rule in stored.sender {
        own.push((NewPushRule::Sender(NewSimplePushRule::new(rule.rule_id, rule.actions)), rule.enabled));
    }

    // A new rule goes first among the user's rules of its kind, so inserting them in reverse
    // keeps their stored order.
    for (rule, enabled) in own.into_iter().rev() {
        let kind = rule.kind();
        let rule_id = rule.rule_id().to_owned();
        if merged.insert(rule, None, None).is_ok() && !enabled {
            let _ = merged.set_enabled(kind, &rule_id, false);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, user_id};

    use super::*;

    #[test]
    fn stored_changes_survive_a_merge_with_the_defaults() {
        let alice = user_id!("@alice:example.org");
        let mut ruleset = Ruleset::server_default(alice);
        ruleset.set_enabled(RuleKind::Override, ".m.rule.is_room_mention", false).unwrap();
        ruleset.set_actions(RuleKind::Underride, ".m.rule.message", vec![]).unwrap();
        for id in ["first", "second"] {
            let rule = NewConditionalPushRule::new(id.into(), vec![], vec![Action::Notify]);
            ruleset.insert(NewPushRule::Override(rule), Some("first").filter(|_| id == "second"), None).unwrap();
        }
        ruleset.set_enabled(RuleKind::Override, "second", false).unwrap();
        let room = NewSimplePushRule::new(room_id!("!r:example.org").to_owned(), vec![]);
        ruleset.insert(NewPushRule::Room(room), None, None).unwrap();

        // Stored and loaded again (as after a restart).
        let text = content(&ruleset).to_string();
        let loaded = load(alice, Some(&text));
        assert_eq!(serde_json::to_value(&loaded).unwrap(), serde_json::to_value(&ruleset).unwrap());
        let ids: Vec<&str> = loaded.override_.iter().map(|rule| rule.rule_id.as_str()).collect();
        assert_eq!(&ids[..3], [".m.rule.master", "first", "second"]);
        assert!(!loaded.override_.get("second").unwrap().enabled);
    }

    /// The server defaults of two users differ only in the rules that [`UserRules::actions`]
    /// builds for the user it runs for (a newer ruma naming the user in another rule would make
    /// the shared copy wrong).
    #[test]
    fn defaults_name_the_user_only_in_the_rules_built_per_user() {
        let per_user =
            [PredefinedOverrideRuleId::InviteForMe.as_str(), PredefinedOverrideRuleId::IsUserMention.as_str()];
        let alice = Ruleset::server_default(user_id!("@alice:example.org"));
        let bob = Ruleset::server_default(user_id!("@bob:example.org"));
        let rules = |ruleset: &Ruleset| -> Vec<(String, Value)> {
            ruleset
                .iter()
                .map(|rule| (rule.rule_id().to_owned(), serde_json::to_value(PushRule::from(rule)).unwrap()))
                .collect()
        };
        let (alice, bob) = (rules(&alice), rules(&bob));
        assert_eq!(alice.len(), bob.len());
        let differing: Vec<&str> =
            alice.iter().zip(&bob).filter(|(a, b)| a != b).map(|((id, _), _)| id.as_str()).collect();
        assert_eq!(differing, per_user);
    }

    /// The shared defaults decide as the user's own copy of the server defaults would: a mention
    /// or an invite of that user, not of another, highlights or notifies.
    #[tokio::test]
    async fn shared_defaults_act_as_the_users_own() {
        let alice = user_id!("@alice:example.org");
        let bob = user_id!("@bob:example.org");
        let cache = RuleCache::default();
        let own = UserRules::Stored(Arc::new(Ruleset::server_default(alice)));
        let shared = UserRules::Defaults(&cache.defaults);
        let context = PushConditionRoomCtx::new(
            room_id!("!r:example.org").to_owned(),
            3u32.into(),
            alice.to_owned(),
            "Alice".into(),
        );
        let events = [
            json!({"type": "m.room.message", "sender": bob, "content": {"msgtype": "m.text", "body": "hi"}}),
            json!({"type": "m.room.message", "sender": bob,
                "content": {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": [alice]}}}),
            json!({"type": "m.room.message", "sender": bob,
                "content": {"msgtype": "m.text", "body": "hi", "m.mentions": {"user_ids": ["@carol:example.org"]}}}),
            json!({"type": "m.room.member", "sender": bob, "state_key": alice, "content": {"membership": "invite"}}),
            json!({"type": "m.room.member", "sender": bob, "state_key": "@carol:example.org",
                "content": {"membership": "invite"}}),
        ];
        let mut outcomes = Vec::new();
        for event in events {
            let raw = ruma::serde::Raw::new(&event).unwrap();
            let flattened = FlattenedJson::from_raw(&raw);
            let expected = own.actions(alice, &flattened, &context).await;
            let actions = shared.actions(alice, &flattened, &context).await;
            assert_eq!(serde_json::to_value(actions).unwrap(), serde_json::to_value(expected).unwrap(), "{event}");
            outcomes.push((actions.iter().any(Action::should_notify), actions.iter().any(Action::is_highlight)));
        }
        assert_eq!(outcomes, [(true, false), (true, true), (true, false), (true, false), (false, false)]);
    }

    #[test]
    fn nothing_stored_means_the_server_defaults() {
        let alice = user_id!("@alice:example.org");
        let defaults = serde_json::to_value(Ruleset::server_default(alice)).unwrap();
        assert_eq!(serde_json::to_value(load(alice, None)).unwrap(), defaults);
        assert_eq!(serde_json::to_value(load(alice, Some("not json"))).unwrap(), defaults);
        assert!(load(alice, None).override_.get(".m.rule.is_user_mention").is_some());
    }
}
