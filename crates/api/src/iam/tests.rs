use serde_json::json;

use super::*;

#[test]
fn models_load_and_answers_fit_them() {
    assert!(IAM.operations.contains_key("CreateUser"));
    assert!(STS.operations.contains_key("AssumeRole"));
    let answer = json!({"User": {"Path": "/", "UserName": "a", "UserId": "AIDAX", "Arn": "arn:aws:iam::1:user/a", "CreateDate": "2026-12-07T00:00:00.000Z"}});
    let xml = query::response(&IAM, "CreateUser", "r1", &answer).unwrap();
    assert!(xml.contains("<CreateUserResult><User><Arn>arn:aws:iam::1:user/a</Arn>"), "{xml}");
}

#[test]
fn errors_take_iam_codes_and_statuses() {
    let e: ApiError = flotilla_iam::IamError::NoSuchEntity("The user with name a cannot be found.".into()).into();
    assert_eq!((e.code, status(&IAM, &e)), ("NoSuchEntity", StatusCode::NOT_FOUND));
    let e: ApiError = flotilla_iam::IamError::DeleteConflict("x".into()).into();
    assert_eq!(status(&IAM, &e), StatusCode::CONFLICT);
    let e: ApiError = flotilla_iam::IamError::InvalidInput("1 validation error detected: x".into()).into();
    assert_eq!((e.code, status(&IAM, &e)), ("ValidationError", StatusCode::BAD_REQUEST));
    let e = error::wire_code(ApiError::new("ExpiredTokenException", "expired"), STS_SIGNING_NAME);
    assert_eq!((e.code, status(&STS, &e)), ("ExpiredToken", StatusCode::FORBIDDEN));
}
