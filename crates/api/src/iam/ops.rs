//! IAM's operations: users and access keys, roles, inline and managed policies. Each takes the
//! model-checked input (JSON keyed by member names) and answers JSON of its output shape.

use flotilla_iam::{AccessKey, Iam, KeyStatus, ManagedPolicy, NewPolicy, NewRole, PolicyScope, Role, User};
use flotilla_types::page::{Order, page_size, paginate};
use serde_json::{Value, json};

use super::{caller_user, opt, req};
use crate::error::ApiError;
use crate::sigv4::{Caller, uri_encode};

/// Runs one IAM action.
pub(super) async fn execute(iam: &Iam, caller: &Caller, action: &str, input: &Value) -> Result<Value, ApiError> {
    let i = input;
    Ok(match action {
        "CreateUser" => {
            refuse_boundary(i)?;
            json!({"User": user(&iam.create_user(req(i, "UserName")?, opt(i, "Path")).await?)})
        }
        "GetUser" => {
            let name = match opt(i, "UserName") {
                Some(n) => n,
                None => caller_user(caller).ok_or_else(|| {
                    ApiError::new("ValidationError", "Must specify userName when calling with non-User credentials")
                })?,
            };
            json!({"User": user(&iam.get_user(name).await?)})
        }
        "ListUsers" => {
            let users = iam.list_users(opt(i, "PathPrefix")).await?;
            let (items, marker) = page(i, users.into_iter().map(|u| (u.name.clone(), user(&u))).collect())?;
            listing("Users", items, marker)
        }
        "DeleteUser" => {
            iam.delete_user(req(i, "UserName")?).await?;
            json!({})
        }
        "CreateAccessKey" => {
            let key = iam.create_access_key(key_owner(i, caller)?).await?;
            json!({"AccessKey": access_key(&key, true)})
        }
        "ListAccessKeys" => {
            let keys = iam.list_access_keys(key_owner(i, caller)?).await?;
            let (items, marker) = page(i, keys.iter().map(|k| (k.id.clone(), access_key(k, false))).collect())?;
            listing("AccessKeyMetadata", items, marker)
        }
        "UpdateAccessKey" => {
            let status = KeyStatus::parse(req(i, "Status")?).expect("the model allows only Active and Inactive");
            iam.update_access_key(key_owner(i, caller)?, req(i, "AccessKeyId")?, status).await?;
            json!({})
        }
        "DeleteAccessKey" => {
            iam.delete_access_key(key_owner(i, caller)?, req(i, "AccessKeyId")?).await?;
            json!({})
        }
        "CreateRole" => {
            refuse_boundary(i)?;
            let new = NewRole {
                name: req(i, "RoleName")?,
                path: opt(i, "Path"),
                trust: req(i, "AssumeRolePolicyDocument")?,
                description: opt(i, "Description"),
                max_session_duration: i.get("MaxSessionDuration").and_then(Value::as_i64),
            };
            json!({"Role": role(&iam.create_role(new).await?)})
        }
        "GetRole" => json!({"Role": role(&iam.get_role(req(i, "RoleName")?).await?)}),
        "ListRoles" => {
            let roles = iam.list_roles(opt(i, "PathPrefix")).await?;
            let (items, marker) = page(i, roles.into_iter().map(|r| (r.name.clone(), role(&r))).collect())?;
            listing("Roles", items, marker)
        }
        "DeleteRole" => {
            iam.delete_role(req(i, "RoleName")?).await?;
            json!({})
        }
        "UpdateAssumeRolePolicy" => {
            iam.update_assume_role_policy(req(i, "RoleName")?, req(i, "PolicyDocument")?).await?;
            json!({})
        }
        "PutRolePolicy" => {
            iam.put_role_policy(req(i, "RoleName")?, req(i, "PolicyName")?, req(i, "PolicyDocument")?).await?;
            json!({})
        }
        "GetRolePolicy" => {
            let (name, policy) = (req(i, "RoleName")?, req(i, "PolicyName")?);
            let document = iam.get_role_policy(name, policy).await?;
            json!({"RoleName": name, "PolicyName": policy, "PolicyDocument": encoded(&document)})
        }
        "ListRolePolicies" => {
            let names = iam.list_role_policies(req(i, "RoleName")?).await?;
            let (items, marker) = page(i, names.into_iter().map(|n| (n.clone(), json!(n))).collect())?;
            listing("PolicyNames", items, marker)
        }
        "DeleteRolePolicy" => {
            iam.delete_role_policy(req(i, "RoleName")?, req(i, "PolicyName")?).await?;
            json!({})
        }
        "PutUserPolicy" => {
            iam.put_user_policy(req(i, "UserName")?, req(i, "PolicyName")?, req(i, "PolicyDocument")?).await?;
            json!({})
        }
        "GetUserPolicy" => {
            let (name, policy) = (req(i, "UserName")?, req(i, "PolicyName")?);
            let document = iam.get_user_policy(name, policy).await?;
            json!({"UserName": name, "PolicyName": policy, "PolicyDocument": encoded(&document)})
        }
        "ListUserPolicies" => {
            let names = iam.list_user_policies(req(i, "UserName")?).await?;
            let (items, marker) = page(i, names.into_iter().map(|n| (n.clone(), json!(n))).collect())?;
            listing("PolicyNames", items, marker)
        }
        "DeleteUserPolicy" => {
            iam.delete_user_policy(req(i, "UserName")?, req(i, "PolicyName")?).await?;
            json!({})
        }
        "CreatePolicy" => {
            let new = NewPolicy {
                name: req(i, "PolicyName")?,
                path: opt(i, "Path"),
                document: req(i, "PolicyDocument")?,
                description: opt(i, "Description"),
            };
            json!({"Policy": policy(&iam.create_policy(new).await?, false)})
        }
        "GetPolicy" => json!({"Policy": policy(&iam.get_policy(policy_arn(i)?).await?, true)}),
        "GetPolicyVersion" => {
            let (version, default) = iam.get_policy_version(policy_arn(i)?, req(i, "VersionId")?).await?;
            json!({"PolicyVersion": {
                "Document": encoded(&version.document),
                "VersionId": version.id,
                "IsDefaultVersion": default,
                "CreateDate": version.created.rfc3339(),
            }})
        }
        "ListPolicies" => {
            let scope = match opt(i, "Scope") {
                Some("AWS") => PolicyScope::Aws,
                Some("Local") => PolicyScope::Local,
                _ => PolicyScope::All,
            };
            let only_attached = i.get("OnlyAttached").and_then(Value::as_bool).unwrap_or(false);
            let policies = iam.list_policies(scope, opt(i, "PathPrefix"), only_attached).await?;
            // AWS's first, then the account's: the ARN sorts them so ("aws" < any account id).
            let (items, marker) = page(i, policies.iter().map(|p| (p.arn.clone(), policy(p, false))).collect())?;
            listing("Policies", items, marker)
        }
        "DeletePolicy" => {
            iam.delete_policy(policy_arn(i)?).await?;
            json!({})
        }
        "CreatePolicyVersion" => {
            let set_default = i.get("SetAsDefault").and_then(Value::as_bool).unwrap_or(false);
            let version = iam.create_policy_version(policy_arn(i)?, req(i, "PolicyDocument")?, set_default).await?;
            json!({"PolicyVersion": {
                "VersionId": version.id,
                "IsDefaultVersion": set_default,
                "CreateDate": version.created.rfc3339(),
            }})
        }
        "DeletePolicyVersion" => {
            iam.delete_policy_version(policy_arn(i)?, req(i, "VersionId")?).await?;
            json!({})
        }
        "ListPolicyVersions" => {
            let p = iam.get_policy(policy_arn(i)?).await?;
            let versions: Vec<(String, Value)> = p
                .versions
                .iter()
                .map(|v| {
                    // Newest first, as IAM lists them.
                    let key = format!("{:010}", u32::MAX - v.id.trim_start_matches('v').parse::<u32>().unwrap_or(0));
                    let value = json!({
                        "VersionId": v.id,
                        "IsDefaultVersion": v.id == p.default_version,
                        "CreateDate": v.created.rfc3339(),
                    });
                    (key, value)
                })
                .collect();
            let (items, marker) = page(i, versions)?;
            listing("Versions", items, marker)
        }
        "SetDefaultPolicyVersion" => {
            iam.set_default_policy_version(policy_arn(i)?, req(i, "VersionId")?).await?;
            json!({})
        }
        "AttachRolePolicy" => {
            iam.attach_role_policy(req(i, "RoleName")?, policy_arn(i)?).await?;
            json!({})
        }
        "DetachRolePolicy" => {
            iam.detach_role_policy(req(i, "RoleName")?, policy_arn(i)?).await?;
            json!({})
        }
        "ListAttachedRolePolicies" => {
            let attached = iam.list_attached_role_policies(req(i, "RoleName")?).await?;
            attached_listing(i, attached)?
        }
        "AttachUserPolicy" => {
            iam.attach_user_policy(req(i, "UserName")?, policy_arn(i)?).await?;
            json!({})
        }
        "DetachUserPolicy" => {
            iam.detach_user_policy(req(i, "UserName")?, policy_arn(i)?).await?;
            json!({})
        }
        "ListAttachedUserPolicies" => {
            let attached = iam.list_attached_user_policies(req(i, "UserName")?).await?;
            attached_listing(i, attached)?
        }
        other => {
            return Err(ApiError::new(
                "InvalidAction",
                format!("The action {other} is not valid for this web service."),
            ));
        }
    })
}

/// Whose access keys a request means: `UserName`, else the calling user's own.
fn key_owner<'a>(input: &'a Value, caller: &'a Caller) -> Result<&'a str, ApiError> {
    match opt(input, "UserName") {
        Some(n) => Ok(n),
        None => caller_user(caller).ok_or_else(|| {
            ApiError::new("ValidationError", "Must specify userName when calling with non-User credentials")
        }),
    }
}

/// A permissions boundary would limit what the entity may do; ignoring one would allow more
/// than its author meant, so it is refused until Flotilla evaluates boundaries.
fn refuse_boundary(input: &Value) -> Result<(), ApiError> {
    if input.get("PermissionsBoundary").is_some() {
        return Err(ApiError::new("InvalidInput", "Permissions boundaries are not supported by Flotilla."));
    }
    Ok(())
}

fn policy_arn(input: &Value) -> Result<&str, ApiError> {
    let arn = req(input, "PolicyArn")?;
    if !flotilla_iam::is_policy_arn(arn) {
        return Err(ApiError::new("ValidationError", format!("ARN {arn} is not valid.")));
    }
    Ok(arn)
}

/// IAM's paging: `MaxItems` (1..=1000, default 100) and an opaque `Marker`.
fn page(input: &Value, items: Vec<(String, Value)>) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let size = page_size(input.get("MaxItems").and_then(Value::as_i64), 100, 1000).map_err(|e| {
        ApiError::new(
            "ValidationError",
            format!("1 validation error detected: Value at 'maxItems' failed to satisfy constraint: {e}"),
        )
    })?;
    let page = paginate(items, Order::Ascending, size, opt(input, "Marker"))
        .map_err(|_| ApiError::new("InvalidInput", "Invalid Marker."))?;
    Ok((page.items, page.next_token))
}

fn listing(member: &str, items: Vec<Value>, marker: Option<String>) -> Value {
    let mut out = json!({ member: items, "IsTruncated": marker.is_some() });
    if let Some(m) = marker {
        out["Marker"] = json!(m);
    }
    out
}

fn attached_listing(input: &Value, attached: Vec<(String, String)>) -> Result<Value, ApiError> {
    let items = attached.into_iter().map(|(name, arn)| (arn.clone(), json!({"PolicyName": name, "PolicyArn": arn})));
    let (items, marker) = page(input, items.collect())?;
    Ok(listing("AttachedPolicies", items, marker))
}

/// A policy document as IAM returns it: URL-encoded.
fn encoded(document: &str) -> String {
    uri_encode(document, false)
}

fn user(u: &User) -> Value {
    json!({"Path": u.path, "UserName": u.name, "UserId": u.id, "Arn": u.arn, "CreateDate": u.created.rfc3339()})
}

fn access_key(k: &AccessKey, with_secret: bool) -> Value {
    let mut v = json!({
        "UserName": k.user_name,
        "AccessKeyId": k.id,
        "Status": k.status.as_str(),
        "CreateDate": k.created.rfc3339(),
    });
    if with_secret {
        v["SecretAccessKey"] = json!(k.secret);
    }
    v
}

fn role(r: &Role) -> Value {
    json!({
        "Path": r.path,
        "RoleName": r.name,
        "RoleId": r.id,
        "Arn": r.arn,
        "CreateDate": r.created.rfc3339(),
        "AssumeRolePolicyDocument": encoded(&r.trust),
        "Description": r.description,
        "MaxSessionDuration": r.max_session_duration,
    })
}

fn policy(p: &ManagedPolicy, with_description: bool) -> Value {
    json!({
        "PolicyName": p.name,
        "PolicyId": p.id,
        "Arn": p.arn,
        "Path": p.path,
        "DefaultVersionId": p.default_version,
        "AttachmentCount": p.attachments,
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": true,
        "Description": if with_description { json!(p.description) } else { Value::Null },
        "CreateDate": p.created.rfc3339(),
        "UpdateDate": p.updated.rfc3339(),
    })
}
