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

#[cfg(test)]
mod tests {
    use flotilla_eks::{ClusterRecord, FargateProfile, KubeAccess, PlaneFuture, ProfileStatus, Selector};

    use super::*;

    struct Profiles(Vec<FargateProfile>);

    impl Clusters for Profiles {
        fn cluster<'a>(&'a self, _: &'a str) -> PlaneFuture<'a, Result<Option<ClusterRecord>, String>> {
            Box::pin(async { Ok(None) })
        }
        fn profiles<'a>(&'a self, _: &'a str) -> PlaneFuture<'a, Result<Vec<FargateProfile>, String>> {
            Box::pin(async { Ok(self.0.clone()) })
        }
        fn access<'a>(&'a self, _: &'a str) -> PlaneFuture<'a, Result<KubeAccess, String>> {
            Box::pin(async { Err("no access".into()) })
        }
    }

    fn profile(name: &str, namespace: &str, labels: &[(&str, &str)], status: ProfileStatus) -> FargateProfile {
        FargateProfile {
            name: name.into(),
            arn: format!("arn:aws:eks:us-east-1:000000000000:fargateprofile/demo/{name}/x"),
            cluster_name: "demo".into(),
            created_at: flotilla_types::time::Timestamp::now(),
            pod_execution_role_arn: "arn:aws:iam::000000000000:role/pods".into(),
            subnets: vec![],
            selectors: vec![Selector {
                namespace: namespace.into(),
                labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            }],
            status,
            tags: vec![],
        }
    }

    fn review_of(namespace: &str, labels: Option<Value>) -> Vec<u8> {
        let mut metadata = json!({"name": "p"});
        if let Some(labels) = labels {
            metadata["labels"] = labels;
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": namespace,
                "object": {"metadata": metadata, "spec": {"containers": [], "schedulerName": "default-scheduler"}},
            },
        })
        .to_string()
        .into_bytes()
    }

    fn patch_of(answer: &Value) -> Option<Value> {
        let encoded = answer["response"]["patch"].as_str()?;
        Some(serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap())
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn matching_pods_get_the_fargate_scheduler_and_their_profile_label() {
        let profiles = Profiles(vec![
            profile("web", "apps", &[("tier", "web")], ProfileStatus::Active),
            profile("pending", "jobs", &[], ProfileStatus::Creating),
        ]);
        // Labels present: the profile's is added beside them.
        let answer = block_on(review(&profiles, "demo", &review_of("apps", Some(json!({"tier": "web"}))))).unwrap();
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(
            patch_of(&answer).unwrap(),
            json!([
                {"op": "add", "path": "/spec/schedulerName", "value": "fargate-scheduler"},
                {"op": "add", "path": "/metadata/labels/eks.amazonaws.com~1fargate-profile", "value": "web"},
            ])
        );
        // A selector's labels must all match; a CREATING profile selects nothing.
        for (namespace, labels) in [("apps", Some(json!({"tier": "db"}))), ("apps", None), ("jobs", None)] {
            let answer = block_on(review(&profiles, "demo", &review_of(namespace, labels))).unwrap();
            assert_eq!(answer["response"]["allowed"], true);
            assert!(patch_of(&answer).is_none(), "{answer}");
        }
        // A pod without labels gets the label map.
        let any = Profiles(vec![profile("all", "apps", &[], ProfileStatus::Active)]);
        let answer = block_on(review(&any, "demo", &review_of("apps", None))).unwrap();
        assert_eq!(
            patch_of(&answer).unwrap()[1],
            json!({"op": "add", "path": "/metadata/labels", "value": {"eks.amazonaws.com/fargate-profile": "all"}})
        );
        assert!(block_on(review(&any, "demo", b"{}")).is_err(), "a review without a uid is refused");
    }
}
