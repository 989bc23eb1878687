//! PLACEHOLDER until helper A's ELBv2 handlers land (the merge keeps A's version of this
//! file): just enough to exercise the Query protocol end to end. DescribeLoadBalancers
//! answers an empty list, or `LoadBalancerNotFound` when names or ARNs are asked for.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::server::ApiState;

pub(crate) async fn execute(state: &ApiState, action: &str, input: Value) -> Result<Value, ApiError> {
    if state.elb.is_none() {
        return Err(ApiError::new("ServiceUnavailable", "This server does not serve Elastic Load Balancing."));
    }
    match action {
        "DescribeLoadBalancers" => {
            let asked = ["Names", "LoadBalancerArns"]
                .iter()
                .filter_map(|k| input.get(*k).and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_str)
                .next();
            match asked {
                Some(name) => {
                    Err(ApiError::new("LoadBalancerNotFound", format!("One or more load balancers not found: {name}")))
                }
                None => Ok(json!({"LoadBalancers": []})),
            }
        }
        other => Err(ApiError::new("InvalidAction", format!("The action {other} is not valid for this web service."))),
    }
}
