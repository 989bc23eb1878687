//! AddTags, RemoveTags and DescribeTags on load balancers, target groups, listeners and rules:
//! each kept in its own record (listeners' and rules' in their load balancer's).

use flotilla_store::{Compare, Op, Txn};
use flotilla_types::Tag;

use crate::record::{LoadBalancer, lb_key, tg_key};
use crate::{CONFLICT_RETRIES, Elb, ElbError, Result, busy, encode};

/// ELB's limit of tags per resource.
const MAX_TAGS: usize = 50;

/// Keys 1 to 128 characters, values up to 256, no `aws:` prefix, no key twice.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<()> {
    for (i, t) in tags.iter().enumerate() {
        if t.key.is_empty() || t.key.chars().count() > 128 || t.value.chars().count() > 256 {
            return Err(ElbError::Validation(format!(
                "Tag key '{}' must be 1 to 128 characters and its value at most 256",
                t.key
            )));
        }
        if t.key.starts_with("aws:") {
            return Err(ElbError::Validation(format!("Tag key '{}' cannot start with 'aws:'", t.key)));
        }
        if tags[..i].iter().any(|u| u.key == t.key) {
            return Err(ElbError::DuplicateTagKeys { key: t.key.clone() });
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ElbError::TooManyTags { limit: MAX_TAGS });
    }
    Ok(())
}

/// Which record holds a resource's tags.
enum Tagged {
    LoadBalancer,
    Listener,
    Rule,
    TargetGroup,
}

fn tagged(arn: &str) -> Option<Tagged> {
    let resource = arn.splitn(6, ':').nth(5)?;
    Some(match resource.split('/').next()? {
        "loadbalancer" => Tagged::LoadBalancer,
        "listener" => Tagged::Listener,
        "listener-rule" => Tagged::Rule,
        "targetgroup" => Tagged::TargetGroup,
        _ => return None,
    })
}

fn tags_of<'a>(lb: &'a mut LoadBalancer, arn: &str) -> Option<&'a mut Vec<Tag>> {
    if lb.arn == arn {
        return Some(&mut lb.tags);
    }
    for listener in &mut lb.listeners {
        if listener.arn == arn {
            return Some(&mut listener.tags);
        }
        if let Some(rule) = listener.rules.iter_mut().find(|r| r.arn == arn) {
            return Some(&mut rule.tags);
        }
    }
    None
}

impl Elb {
    /// Changes the tags of the resource `arn` names with `change` (which may refuse).
    async fn retag(&self, arn: &str, change: &(dyn Fn(&mut Vec<Tag>) -> Result<()> + Sync)) -> Result<()> {
        let unknown = || {
            ElbError::Validation(format!("'{arn}' is not a valid load balancer, listener, rule or target group ARN"))
        };
        let kind = tagged(arn).ok_or_else(unknown)?;
        for _ in 0..CONFLICT_RETRIES {
            let (key, value, rev) = match kind {
                Tagged::TargetGroup => {
                    let (mut group, rev) = self.group_record(arn).await?;
                    change(&mut group.tags)?;
                    (tg_key(&group.name), encode(&group), rev)
                }
                Tagged::LoadBalancer | Tagged::Listener | Tagged::Rule => {
                    let (mut lb, rev) = match kind {
                        Tagged::LoadBalancer => self.lb_record(arn).await?,
                        Tagged::Listener => self.listener_lb(arn).await?,
                        _ => self.rule_lb(arn).await?,
                    };
                    let tags = tags_of(&mut lb, arn).ok_or_else(unknown)?;
                    change(tags)?;
                    (lb_key(&lb.name), encode(&lb), rev)
                }
            };
            let txn = Txn::new().when(Compare::revision(&key, rev)).then(Op::put(&key, value));
            if self.commit(txn).await? {
                return Ok(());
            }
        }
        Err(busy("The resource"))
    }

    /// AddTags: a key already there takes the new value.
    pub async fn add_tags(&self, arns: &[String], tags: &[Tag]) -> Result<()> {
        check_tags(tags)?;
        for arn in arns {
            self.retag(arn, &|current| {
                flotilla_types::tag::merge(current, tags.iter().cloned());
                if current.len() > MAX_TAGS {
                    return Err(ElbError::TooManyTags { limit: MAX_TAGS });
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    pub async fn remove_tags(&self, arns: &[String], keys: &[String]) -> Result<()> {
        for arn in arns {
            self.retag(arn, &|current| {
                current.retain(|t| !keys.contains(&t.key));
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// DescribeTags: each resource's tags, in the order asked.
    pub async fn describe_tags(&self, arns: &[String]) -> Result<Vec<(String, Vec<Tag>)>> {
        let mut out = Vec::new();
        for arn in arns {
            let unknown = || {
                ElbError::Validation(format!(
                    "'{arn}' is not a valid load balancer, listener, rule or target group ARN"
                ))
            };
            let tags = match tagged(arn).ok_or_else(unknown)? {
                Tagged::TargetGroup => self.group_record(arn).await?.0.tags,
                kind => {
                    let (mut lb, _) = match kind {
                        Tagged::LoadBalancer => self.lb_record(arn).await?,
                        Tagged::Listener => self.listener_lb(arn).await?,
                        _ => self.rule_lb(arn).await?,
                    };
                    tags_of(&mut lb, arn).ok_or_else(unknown)?.clone()
                }
            };
            out.push((arn.clone(), tags));
        }
        Ok(out)
    }
}
