//! The in-memory view of every IAM record, with policies parsed once: what authentication and
//! authorisation read on every request. It is loaded at open and kept current by a store watch,
//! so another server's writes arrive here too; a server's own writes wait until the view has
//! seen them ([`View::seen`]), so a caller's next request sees what it just did.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_store::{Event, KeyValue, Store, StoreError};

use crate::policy::{Policy, PolicyKind, PolicySet};
use crate::record::{self, AccessKey, ManagedPolicy, Role, Session, User, decode};
use crate::{IamError, aws};

/// A document as stored and as parsed; `None` if it no longer parses (it did when written), in
/// which case whoever holds it is denied rather than allowed more than it says.
pub(crate) type Parsed = Option<Arc<Policy>>;

fn parse(text: &str, kind: PolicyKind) -> Parsed {
    match Policy::parse(text, kind) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            tracing::warn!(error = %e, "a stored IAM policy no longer parses; its holder is denied");
            None
        }
    }
}

pub(crate) struct UserEntry {
    pub user: User,
    pub inline: Vec<Parsed>,
}

pub(crate) struct RoleEntry {
    pub role: Role,
    pub inline: Vec<Parsed>,
}

pub(crate) struct PolicyEntry {
    pub policy: ManagedPolicy,
    pub parsed: Parsed,
}

impl PolicyEntry {
    pub fn new(policy: ManagedPolicy) -> PolicyEntry {
        let parsed = parse(policy.default_document(), PolicyKind::Identity);
        PolicyEntry { policy, parsed }
    }
}

#[derive(Default)]
pub(crate) struct Records {
    pub users: HashMap<String, Arc<UserEntry>>,
    pub keys: HashMap<String, AccessKey>,
    pub roles: HashMap<String, Arc<RoleEntry>>,
    /// Customer managed policies by name (unique in the account whatever their path).
    pub policies: HashMap<String, Arc<PolicyEntry>>,
    /// AWS managed policies by ARN: built in, never stored.
    pub aws: HashMap<String, Arc<PolicyEntry>>,
    pub sessions: HashMap<String, Session>,
    /// Each user's and role's identity policies, gathered for evaluation (every request
    /// evaluates them) whenever the user, the role or a managed policy it attaches changes;
    /// `None` when one does not parse (the principal is then denied).
    pub user_policies: HashMap<String, Option<Arc<PolicySet>>>,
    pub role_policies: HashMap<String, Option<Arc<PolicySet>>>,
}

/// One change, decoded and parsed before the view's lock is taken, so that requests reading
/// the view never wait on a policy's parse.
enum Change {
    User(String, Arc<UserEntry>),
    Key(String, AccessKey),
    Role(String, Arc<RoleEntry>),
    Policy(String, Arc<PolicyEntry>),
    Session(String, Session),
    Delete(String),
    Other,
}

impl Change {
    fn of(event: &Event) -> Result<Change, IamError> {
        match event {
            Event::Put(kv) => Change::put(kv),
            Event::Delete { key, .. } => Ok(Change::Delete(key.clone())),
        }
    }

    fn put(kv: &KeyValue) -> Result<Change, IamError> {
        let key = kv.key.as_str();
        Ok(if let Some(name) = key.strip_prefix(record::USERS) {
            let user: User = decode(kv)?;
            let inline = user.inline.values().map(|d| parse(d, PolicyKind::Identity)).collect();
            Change::User(name.to_owned(), Arc::new(UserEntry { user, inline }))
        } else if let Some(id) = key.strip_prefix(record::KEYS) {
            Change::Key(id.to_owned(), decode(kv)?)
        } else if let Some(name) = key.strip_prefix(record::ROLES) {
            let role: Role = decode(kv)?;
            let inline = role.inline.values().map(|d| parse(d, PolicyKind::Identity)).collect();
            Change::Role(name.to_owned(), Arc::new(RoleEntry { role, inline }))
        } else if let Some(name) = key.strip_prefix(record::POLICIES) {
            Change::Policy(name.to_owned(), Arc::new(PolicyEntry::new(decode(kv)?)))
        } else if let Some(id) = key.strip_prefix(record::SESSIONS) {
            Change::Session(id.to_owned(), decode(kv)?)
        } else {
            Change::Other
        })
    }
}

impl Records {
    /// Applies `change` and gathers again the policies it may change.
    fn apply(&mut self, change: Change) {
        match &change {
            Change::User(name, _) => {
                let name = name.clone();
                self.apply_only(change);
                self.gather_user(&name);
            }
            Change::Role(name, _) => {
                let name = name.clone();
                self.apply_only(change);
                self.gather_role(&name);
            }
            Change::Policy(name, _) => {
                let name = name.clone();
                self.apply_only(change);
                self.gather_attaching(&name);
            }
            Change::Delete(key) if key.starts_with(record::POLICIES) => {
                let name = key[record::POLICIES.len()..].to_owned();
                self.apply_only(change);
                self.gather_attaching(&name);
            }
            _ => self.apply_only(change),
        }
    }

    /// Applies `change` alone: loading gathers every principal's policies once at the end.
    fn apply_only(&mut self, change: Change) {
        match change {
            Change::User(name, entry) => {
                self.users.insert(name, entry);
            }
            Change::Key(id, key) => {
                self.keys.insert(id, key);
            }
            Change::Role(name, entry) => {
                self.roles.insert(name, entry);
            }
            Change::Policy(name, entry) => {
                self.policies.insert(name, entry);
            }
            Change::Session(id, session) => {
                self.sessions.insert(id, session);
            }
            Change::Delete(key) => self.delete(&key),
            Change::Other => {}
        }
    }

    fn gather_user(&mut self, name: &str) {
        let gathered = self.users.get(name).map(|u| self.gather(&u.inline, &u.user.attached));
        match gathered {
            Some(set) => self.user_policies.insert(name.to_owned(), set),
            None => self.user_policies.remove(name),
        };
    }

    fn gather_role(&mut self, name: &str) {
        let gathered = self.roles.get(name).map(|r| self.gather(&r.inline, &r.role.attached));
        match gathered {
            Some(set) => self.role_policies.insert(name.to_owned(), set),
            None => self.role_policies.remove(name),
        };
    }

    /// Gathers again the users and roles that attach the customer managed policy `name` (its
    /// ARN ends with `/name` whatever its path).
    fn gather_attaching(&mut self, name: &str) {
        let attaches = |attached: &[String]| attached.iter().any(|arn| arn.rsplit('/').next() == Some(name));
        let users: Vec<String> =
            self.users.iter().filter(|(_, u)| attaches(&u.user.attached)).map(|(n, _)| n.clone()).collect();
        let roles: Vec<String> =
            self.roles.iter().filter(|(_, r)| attaches(&r.role.attached)).map(|(n, _)| n.clone()).collect();
        users.iter().for_each(|user| self.gather_user(user));
        roles.iter().for_each(|role| self.gather_role(role));
    }

    fn gather_all(&mut self) {
        self.user_policies =
            self.users.iter().map(|(name, u)| (name.clone(), self.gather(&u.inline, &u.user.attached))).collect();
        self.role_policies =
            self.roles.iter().map(|(name, r)| (name.clone(), self.gather(&r.inline, &r.role.attached))).collect();
    }

    fn gather(&self, inline: &[Parsed], attached: &[String]) -> Option<Arc<PolicySet>> {
        self.identity_policies(inline, attached).map(|all| Arc::new(PolicySet::new(all)))
    }

    fn delete(&mut self, key: &str) {
        if let Some(name) = key.strip_prefix(record::USERS) {
            self.users.remove(name);
            self.user_policies.remove(name);
        } else if let Some(id) = key.strip_prefix(record::KEYS) {
            self.keys.remove(id);
        } else if let Some(name) = key.strip_prefix(record::ROLES) {
            self.roles.remove(name);
            self.role_policies.remove(name);
        } else if let Some(name) = key.strip_prefix(record::POLICIES) {
            self.policies.remove(name);
        } else if let Some(id) = key.strip_prefix(record::SESSIONS) {
            self.sessions.remove(id);
        }
    }

    /// The managed policy `arn` names, AWS's or the account's.
    pub fn managed(&self, arn: &str) -> Option<&Arc<PolicyEntry>> {
        if let Some(p) = self.aws.get(arn) {
            return Some(p);
        }
        let name = arn.rsplit('/').next()?;
        self.policies.get(name).filter(|p| p.policy.arn == arn)
    }

    /// Every identity policy of a principal with `inline` and `attached` policies; `None` if one
    /// of them does not parse (the principal is then denied).
    pub fn identity_policies(&self, inline: &[Parsed], attached: &[String]) -> Option<Vec<Arc<Policy>>> {
        let mut all = Vec::with_capacity(inline.len() + attached.len());
        for p in inline {
            all.push(p.clone()?);
        }
        for arn in attached {
            // A policy deleted while attached cannot happen (DeleteConflict); one missing from
            // the view for a moment grants nothing.
            if let Some(entry) = self.managed(arn) {
                all.push(entry.parsed.clone()?);
            }
        }
        Some(all)
    }
}

/// The view, and the revision it has seen up to.
pub(crate) struct View {
    records: RwLock<Records>,
    seen: tokio::sync::watch::Sender<u64>,
}

impl View {
    /// Loads every record under `iam/` and starts following the store; the returned task
    /// keeps the view current until aborted.
    pub async fn start(store: Arc<dyn Store>) -> Result<(Arc<View>, tokio::task::JoinHandle<()>), IamError> {
        // Watch first, then load: no change can fall between the two.
        let watch = store.watch(record::PREFIX);
        let (records, revision) = load(store.as_ref()).await?;
        let view = Arc::new(View { records: RwLock::new(records), seen: tokio::sync::watch::channel(revision).0 });
        let follower = tokio::spawn(follow(store, view.clone(), watch));
        Ok((view, follower))
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        self.records.read().expect("IAM view lock")
    }

    /// Waits (a few seconds at most) until the view has seen the store's `revision`.
    pub async fn seen(&self, revision: u64) {
        let mut rx = self.seen.subscribe();
        let wait = rx.wait_for(|seen| *seen >= revision);
        if tokio::time::timeout(Duration::from_secs(5), wait).await.is_err() {
            tracing::warn!(revision, "the IAM view has not caught up with a write after 5 s");
        }
    }
}

async fn load(store: &dyn Store) -> Result<(Records, u64), IamError> {
    let revision = store.revision().await?;
    let mut records = Records { aws: aws::policies(), ..Records::default() };
    for kv in store.list_prefix(record::PREFIX).await? {
        match Change::put(&kv) {
            Ok(change) => records.apply_only(change),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable IAM record"),
        }
    }
    records.gather_all();
    Ok((records, revision))
}

async fn follow(store: Arc<dyn Store>, view: Arc<View>, mut watch: flotilla_store::Watch) {
    loop {
        match watch.next().await {
            Ok(event) => {
                let revision = match &event {
                    Event::Put(kv) => kv.mod_revision,
                    Event::Delete { revision, .. } => *revision,
                };
                match Change::of(&event) {
                    Ok(change) => view.records.write().expect("IAM view lock").apply(change),
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable IAM record"),
                }
                view.seen.send_if_modified(|seen| {
                    let newer = revision > *seen;
                    *seen = (*seen).max(revision);
                    newer
                });
            }
            Err(StoreError::WatchLagged { .. }) => {
                watch = store.watch(record::PREFIX);
                loop {
                    match load(store.as_ref()).await {
                        Ok((records, revision)) => {
                            *view.records.write().expect("IAM view lock") = records;
                            view.seen.send_if_modified(|seen| {
                                let newer = revision > *seen;
                                *seen = (*seen).max(revision);
                                newer
                            });
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot reload IAM records; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use flotilla_types::Timestamp;

    use super::*;
    use crate::policy::{BorrowedContext, BorrowedPrincipal, ContextKeys, Decision};
    use crate::record::PolicyVersion;

    const ARN: &str = "arn:aws:iam::123456789012:policy/team/readers";

    fn policy(effect: &str) -> Change {
        let document = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"{effect}","Action":"ecs:Describe*","Resource":"*"}}]}}"#
        );
        Change::Policy(
            "readers".into(),
            Arc::new(PolicyEntry::new(ManagedPolicy {
                name: "readers".into(),
                path: "/team/".into(),
                id: "ANPAEXAMPLE".into(),
                arn: ARN.into(),
                description: None,
                created: Timestamp(0),
                updated: Timestamp(0),
                default_version: "v1".into(),
                versions: vec![PolicyVersion { id: "v1".into(), document, created: Timestamp(0) }],
                attachments: 1,
                next_version: 2,
            })),
        )
    }

    fn alice(attached: &[&str]) -> Change {
        let user = User {
            name: "alice".into(),
            path: "/".into(),
            id: "AIDAEXAMPLE".into(),
            arn: "arn:aws:iam::123456789012:user/alice".into(),
            created: Timestamp(0),
            inline: BTreeMap::new(),
            attached: attached.iter().map(|a| (*a).to_owned()).collect(),
            keys: Vec::new(),
        };
        Change::User("alice".into(), Arc::new(UserEntry { user, inline: Vec::new() }))
    }

    /// Alice's decision for `ecs:DescribeClusters`; `None` when the view holds no policies for her.
    fn decide(records: &Records) -> Option<Decision> {
        let ctx = BorrowedContext {
            action: "ecs:DescribeClusters",
            resource: "*",
            principal: BorrowedPrincipal::Aws { arn: "arn:aws:iam::123456789012:user/alice", account: "123456789012" },
            keys: ContextKeys::default(),
        };
        let set = records.user_policies.get("alice")?;
        Some(set.as_ref().map_or(Decision::ExplicitDeny, |set| set.evaluate(&ctx)))
    }

    /// A user's gathered policies follow the user and the managed policies it attaches: a new
    /// default version, the policy's deletion, the user's.
    #[test]
    fn gathered_policies_follow_their_sources() {
        let mut records = Records::default();
        records.apply(alice(&[]));
        assert_eq!(decide(&records), Some(Decision::ImplicitDeny));
        records.apply(policy("Allow"));
        records.apply(alice(&[ARN]));
        assert_eq!(decide(&records), Some(Decision::Allow));
        records.apply(policy("Deny"));
        assert_eq!(decide(&records), Some(Decision::ExplicitDeny), "the new version reaches her");
        records.apply(Change::Delete(record::policy_key("readers")));
        assert_eq!(decide(&records), Some(Decision::ImplicitDeny));
        records.apply(Change::Delete(record::user_key("alice")));
        assert_eq!(decide(&records), None);
    }
}
