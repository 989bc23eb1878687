//! VPCs, subnets, availability zones and tags: request members in, control-plane call,
//! output shape out.

use flotilla_control::{Control, CreateSubnetInput, CreateVpcInput, Subnet, TagRemoval, Vpc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{TagSpecification, WireFilter, WireTag, filters, specified_tags, tag_list, tags};
use crate::error::ApiError;

pub(super) fn vpc_json(control: &Control, vpc: &Vpc) -> Value {
    let mut v = json!({
        "VpcId": vpc.id,
        "OwnerId": control.identity().account,
        "State": "available",
        "CidrBlock": vpc.cidr.to_string(),
        "DhcpOptionsId": "default",
        "InstanceTenancy": "default",
        "IsDefault": vpc.is_default,
        "CidrBlockAssociationSet": [{
            "AssociationId": vpc.cidr_association_id,
            "CidrBlock": vpc.cidr.to_string(),
            "CidrBlockState": {"State": "associated"},
        }],
    });
    if !vpc.tags.is_empty() {
        v["Tags"] = tag_list(&vpc.tags);
    }
    v
}

/// AWS-style zone ids: `use1-az1` for `us-east-1a`, `apne1-az2` for `ap-northeast-1b`.
pub(super) fn zone_id(region: &str, zone: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    let mut short = String::new();
    for (i, part) in parts.iter().enumerate() {
        let abbreviation = match *part {
            "northeast" => "ne",
            "southeast" => "se",
            "northwest" => "nw",
            "southwest" => "sw",
            "central" => "c",
            p if i == parts.len() - 1 => p,
            p => &p[..p.len().min(if i == 0 { 2 } else { 1 })],
        };
        short.push_str(abbreviation);
    }
    let letter = zone.chars().last().unwrap_or('a');
    format!("{short}-az{}", (letter as u32).saturating_sub('a' as u32) + 1)
}

fn subnet_json(control: &Control, s: &Subnet) -> Value {
    let account = &control.identity().account;
    let mut v = json!({
        "SubnetId": s.id,
        "SubnetArn": control.identity().subnet(&s.id),
        "VpcId": s.vpc_id,
        "OwnerId": account,
        "State": "available",
        "CidrBlock": s.cidr.to_string(),
        "AvailabilityZone": s.availability_zone,
        "AvailabilityZoneId": zone_id(&control.identity().region, &s.availability_zone),
        "AvailableIpAddressCount": s.available_ip_address_count,
        "DefaultForAz": s.default_for_az,
        "MapPublicIpOnLaunch": s.map_public_ip_on_launch,
        "MapCustomerOwnedIpOnLaunch": false,
        "AssignIpv6AddressOnCreation": false,
        "Ipv6CidrBlockAssociationSet": [],
        "Ipv6Native": false,
        "EnableDns64": false,
        "PrivateDnsNameOptionsOnLaunch": {
            "HostnameType": "ip-name",
            "EnableResourceNameDnsARecord": false,
            "EnableResourceNameDnsAAAARecord": false,
        },
    });
    if !s.tags.is_empty() {
        v["Tags"] = tag_list(&s.tags);
    }
    v
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateVpc {
    cidr_block: Option<String>,
    ipv4_ipam_pool_id: Option<String>,
    ipv6_cidr_block: Option<String>,
    #[serde(default)]
    amazon_provided_ipv6_cidr_block: bool,
    instance_tenancy: Option<String>,
    #[serde(default)]
    tag_specifications: Vec<TagSpecification>,
}

pub(super) async fn create_vpc(control: &Control, req: CreateVpc) -> Result<Value, ApiError> {
    if req.ipv6_cidr_block.is_some() || req.amazon_provided_ipv6_cidr_block {
        return Err(ApiError::new("InvalidParameterValue", "Flotilla VPCs are IPv4 only: leave out the IPv6 block."));
    }
    if req.ipv4_ipam_pool_id.is_some() {
        return Err(ApiError::new("InvalidParameterValue", "Flotilla has no IPAM pools: give CidrBlock."));
    }
    if let Some(t) = req.instance_tenancy.as_deref()
        && t != "default"
    {
        return Err(ApiError::new(
            "InvalidParameterValue",
            format!("Value ({t}) for parameter instanceTenancy is invalid. Flotilla runs default tenancy only."),
        ));
    }
    let cidr_block = req.cidr_block.ok_or_else(|| {
        ApiError::new("MissingParameter", "The request must contain the parameter CidrBlock or Ipv4IpamPoolId")
    })?;
    let tags = specified_tags(req.tag_specifications, "vpc")?;
    let vpc = control.create_vpc(CreateVpcInput { cidr_block, tags }).await?;
    Ok(json!({ "Vpc": vpc_json(control, &vpc) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeVpcs {
    #[serde(default)]
    vpc_ids: Vec<String>,
    #[serde(default)]
    filters: Vec<WireFilter>,
}

pub(super) async fn describe_vpcs(control: &Control, req: DescribeVpcs) -> Result<Value, ApiError> {
    let vpcs = control.describe_vpcs(&req.vpc_ids, &filters(req.filters)?).await?;
    Ok(json!({ "Vpcs": vpcs.iter().map(|v| vpc_json(control, v)).collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct VpcRef {
    vpc_id: String,
}

pub(super) async fn delete_vpc(control: &Control, req: VpcRef) -> Result<Value, ApiError> {
    control.delete_vpc(&req.vpc_id).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateSubnet {
    vpc_id: String,
    cidr_block: Option<String>,
    availability_zone: Option<String>,
    availability_zone_id: Option<String>,
    ipv6_cidr_block: Option<String>,
    #[serde(default)]
    ipv6_native: bool,
    #[serde(default)]
    tag_specifications: Vec<TagSpecification>,
}

pub(super) async fn create_subnet(control: &Control, req: CreateSubnet) -> Result<Value, ApiError> {
    if req.ipv6_cidr_block.is_some() || req.ipv6_native {
        return Err(ApiError::new("InvalidParameterValue", "Flotilla subnets are IPv4 only: leave out IPv6."));
    }
    let cidr_block = req
        .cidr_block
        .ok_or_else(|| ApiError::new("MissingParameter", "The request must contain the parameter CidrBlock"))?;
    let region = &control.identity().region;
    let availability_zone = match (req.availability_zone, req.availability_zone_id) {
        (Some(zone), _) => Some(zone),
        (None, Some(id)) => {
            Some(control.availability_zones().into_iter().find(|z| zone_id(region, z) == id).ok_or_else(|| {
                ApiError::new(
                    "InvalidParameterValue",
                    format!("Value ({id}) for parameter availabilityZoneId is invalid: no such zone in {region}."),
                )
            })?)
        }
        (None, None) => None,
    };
    let tags = specified_tags(req.tag_specifications, "subnet")?;
    let subnet =
        control.create_subnet(CreateSubnetInput { vpc_id: req.vpc_id, cidr_block, availability_zone, tags }).await?;
    Ok(json!({ "Subnet": subnet_json(control, &subnet) }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeSubnets {
    #[serde(default)]
    subnet_ids: Vec<String>,
    #[serde(default)]
    filters: Vec<WireFilter>,
}

pub(super) async fn describe_subnets(control: &Control, req: DescribeSubnets) -> Result<Value, ApiError> {
    let subnets = control.describe_subnets(&req.subnet_ids, &filters(req.filters)?).await?;
    Ok(json!({ "Subnets": subnets.iter().map(|s| subnet_json(control, s)).collect::<Vec<_>>() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SubnetRef {
    subnet_id: String,
}

pub(super) async fn delete_subnet(control: &Control, req: SubnetRef) -> Result<Value, ApiError> {
    control.delete_subnet(&req.subnet_id).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DescribeAvailabilityZones {
    #[serde(default)]
    zone_names: Vec<String>,
    #[serde(default)]
    zone_ids: Vec<String>,
    #[serde(default)]
    filters: Vec<WireFilter>,
}

pub(super) fn describe_availability_zones(
    control: &Control,
    req: DescribeAvailabilityZones,
) -> Result<Value, ApiError> {
    let region = control.identity().region.clone();
    let zones: Vec<(String, String)> =
        control.availability_zones().into_iter().map(|z| (zone_id(&region, &z), z)).collect();
    for name in &req.zone_names {
        if !zones.iter().any(|(_, z)| z == name) {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!("The zone '{name}' does not exist in {region}."),
            ));
        }
    }
    for id in &req.zone_ids {
        if !zones.iter().any(|(z, _)| z == id) {
            return Err(ApiError::new(
                "InvalidParameterValue",
                format!("The zone ID '{id}' does not exist in {region}."),
            ));
        }
    }
    let filters = filters(req.filters)?;
    let mut out = Vec::new();
    for (id, name) in zones {
        if (!req.zone_names.is_empty() || !req.zone_ids.is_empty())
            && !req.zone_names.contains(&name)
            && !req.zone_ids.contains(&id)
        {
            continue;
        }
        let mut keep = true;
        for f in &filters {
            let value = match f.name.as_str() {
                "zone-name" => name.clone(),
                "zone-id" => id.clone(),
                "region-name" | "group-name" => region.clone(),
                "state" => "available".into(),
                "zone-type" => "availability-zone".into(),
                "opt-in-status" => "opt-in-not-required".into(),
                other => {
                    return Err(ApiError::new("InvalidParameterValue", format!("The filter '{other}' is invalid")));
                }
            };
            keep &= f.values.contains(&value);
        }
        if keep {
            out.push(json!({
                "ZoneName": name,
                "ZoneId": id,
                "State": "available",
                "RegionName": region,
                "GroupName": region,
                "NetworkBorderGroup": region,
                "OptInStatus": "opt-in-not-required",
                "ZoneType": "availability-zone",
                "Messages": [],
            }));
        }
    }
    Ok(json!({ "AvailabilityZones": out }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CreateTags {
    resources: Vec<String>,
    tags: Vec<WireTag>,
}

pub(super) async fn create_tags(control: &Control, req: CreateTags) -> Result<Value, ApiError> {
    control.create_tags(&req.resources, &tags(req.tags)?).await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct DeleteTags {
    resources: Vec<String>,
    #[serde(default)]
    tags: Vec<WireTag>,
}

pub(super) async fn delete_tags(control: &Control, req: DeleteTags) -> Result<Value, ApiError> {
    let removals = req
        .tags
        .into_iter()
        .map(|t| match t.key {
            Some(key) => Ok(TagRemoval { key, value: t.value }),
            None => Err(ApiError::new("InvalidParameterValue", "Tag keys must not be empty.")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    control.delete_tags(&req.resources, &removals).await?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_follow_aws_abbreviations() {
        assert_eq!(zone_id("us-east-1", "us-east-1a"), "use1-az1");
        assert_eq!(zone_id("ap-northeast-1", "ap-northeast-1c"), "apne1-az3");
        assert_eq!(zone_id("eu-central-1", "eu-central-1b"), "euc1-az2");
    }
}
