//! Profile admission: a pod created in a namespace, with labels, that an ACTIVE Fargate profile
//! of its cluster selects is given to the Fargate scheduler (`spec.schedulerName`) and labelled
//! with its profile (`eks.amazonaws.com/fargate-profile`, as real Fargate pods are); any other
//! pod is allowed unchanged, for the cluster's own scheduler.

use std::collections::BTreeMap;

use base64::Engine;
use flotilla_eks::{PROFILE_LABEL, match_profile};
use serde_json::{Value, json};

use super::Clusters;

/// The scheduler Fargate pods are handed to (`flotilla_k8s::scheduler`).
pub const FARGATE_SCHEDULER: &str = "fargate-scheduler";

/// Answers an AdmissionReview request body for `cluster`.
pub async fn review(clusters: &dyn Clusters, cluster: &str, body: &[u8]) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let api_version = review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1").to_owned();
    let request = &review["request"];
    let uid = request["uid"].as_str().ok_or("an AdmissionReview without request.uid")?;
    let response = match patch(clusters, cluster, request).await {
        Ok(None) => json!({"uid": uid, "allowed": true}),
        Ok(Some(ops)) => json!({
            "uid": uid,
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(ops.to_string()),
        }),
        Err(why) => {
            tracing::warn!(cluster, "pod admission refused: {why}");
            json!({"uid": uid, "allowed": false, "status": {"code": 503, "message": why}})
        }
    };
    Ok(json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}))
}

/// The JSON patch for the pod `request` creates, if a profile selects it.
async fn patch(clusters: &dyn Clusters, cluster: &str, request: &Value) -> Result<Option<Value>, String> {
    let is_pod_create = request["kind"]["kind"] == "Pod" && request["operation"] == "CREATE";
    if !is_pod_create {
        return Ok(None);
    }
    let pod = &request["object"];
    let namespace =
        request["namespace"].as_str().or_else(|| pod["metadata"]["namespace"].as_str()).unwrap_or("default");
    let labels: BTreeMap<String, String> = pod["metadata"]["labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default();
    let profiles = clusters
        .profiles(cluster)
        .await
        .map_err(|e| format!("Flotilla cannot read cluster {cluster}'s Fargate profiles: {e}"))?;
    let Some(profile) = match_profile(&profiles, namespace, &labels) else {
        return Ok(None);
    };
    let label_op = if pod["metadata"]["labels"].is_object() {
        json!({"op": "add", "path": format!("/metadata/labels/{}", PROFILE_LABEL.replace('~', "~0").replace('/', "~1")), "value": profile.name})
    } else {
        json!({"op": "add", "path": "/metadata/labels", "value": {PROFILE_LABEL: profile.name}})
    };
    // `add` on an existing member replaces it (RFC 6902), so this holds whether or not the
    // pod named a scheduler.
    let scheduler_op = json!({"op": "add", "path": "/spec/schedulerName", "value": FARGATE_SCHEDULER});
    Ok(Some(json!([scheduler_op, label_op])))
}
