//! KMS through the AWS CLI, and secrets at rest: keys, aliases, Encrypt/Decrypt with
//! `fileb://`, the AWS managed keys; SecureStrings and secrets encrypted under them, readable
//! after a restart and absent from every file of the data dir; key files refused where they
//! would not keep secrets (in the data dir, open to others) and a store sealed under another.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine;
use common::Server;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text).expect("base64 on the wire")
}

/// Every file below `dir` that holds `needle`, but for the tasks' scratch pool: sparse 20 GB
/// images of empty file systems, made before any task (and no task runs here).
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && entry.file_name() != ".scratch-pool" {
                pending.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn keys_aliases_and_encryption_through_the_aws_cli() {
    let s = Server::start_no_agent();
    let dir = tempfile::tempdir().unwrap();
    let created = s.aws_json(&[
        "kms",
        "create-key",
        "--description",
        "app data",
        "--key-usage",
        "ENCRYPT_DECRYPT",
        "--key-spec",
        "SYMMETRIC_DEFAULT",
        "--tags",
        "TagKey=team,TagValue=payments",
    ]);
    let meta = &created["KeyMetadata"];
    let (id, arn) = (meta["KeyId"].as_str().unwrap().to_owned(), meta["Arn"].as_str().unwrap().to_owned());
    assert_eq!(arn, format!("arn:aws:kms:us-east-1:000000000000:key/{id}"));
    assert_eq!((meta["KeyState"].as_str(), meta["KeyManager"].as_str()), (Some("Enabled"), Some("CUSTOMER")));
    assert_eq!(meta["Description"], "app data");
    let described = s.aws_json(&["kms", "describe-key", "--key-id", &arn]);
    assert_eq!(described["KeyMetadata"]["KeyId"].as_str(), Some(id.as_str()));
    let keys = s.aws_json(&["kms", "list-keys"]);
    assert_eq!(keys["Keys"], serde_json::json!([{"KeyId": id, "KeyArn": arn}]), "{keys}");

    s.aws_json(&["kms", "create-alias", "--alias-name", "alias/app", "--target-key-id", &id]);
    let taken = s.aws_err(&["kms", "create-alias", "--alias-name", "alias/app", "--target-key-id", &id]);
    assert!(taken.contains("AlreadyExistsException"), "{taken}");
    let reserved = s.aws_err(&["kms", "create-alias", "--alias-name", "alias/aws/mine", "--target-key-id", &id]);
    assert!(reserved.contains("InvalidAliasNameException"), "{reserved}");
    let aliases = s.aws_json(&["kms", "list-aliases"]);
    let names: Vec<(&str, bool)> = aliases["Aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["AliasName"].as_str().unwrap(), a.get("TargetKeyId").is_some()))
        .collect();
    assert_eq!(names, [("alias/app", true), ("alias/aws/secretsmanager", false), ("alias/aws/ssm", false)]);

    // Encrypt a binary file by alias, decrypt without naming the key.
    let plain: Vec<u8> = (0u8..=255).chain(*b"the plaintext").collect();
    let plain_file = dir.path().join("plain.bin");
    std::fs::write(&plain_file, &plain).unwrap();
    let encrypted = s.aws_json(&[
        "kms",
        "encrypt",
        "--key-id",
        "alias/app",
        "--plaintext",
        &format!("fileb://{}", plain_file.display()),
        "--encryption-context",
        "purpose=test,tenant=a",
    ]);
    assert_eq!(encrypted["KeyId"].as_str(), Some(arn.as_str()));
    let blob = unb64(encrypted["CiphertextBlob"].as_str().unwrap());
    assert!(!blob.windows(13).any(|w| w == b"the plaintext"));
    let blob_file = dir.path().join("blob.bin");
    std::fs::write(&blob_file, &blob).unwrap();
    let blob_arg = format!("fileb://{}", blob_file.display());
    let decrypted = s.aws_json(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &blob_arg,
        "--encryption-context",
        "tenant=a,purpose=test",
    ]);
    assert_eq!(unb64(decrypted["Plaintext"].as_str().unwrap()), plain);
    assert_eq!(decrypted["KeyId"].as_str(), Some(arn.as_str()));
    let wrong =
        s.aws_err(&["kms", "decrypt", "--ciphertext-blob", &blob_arg, "--encryption-context", "tenant=b,purpose=test"]);
    assert!(wrong.contains("InvalidCiphertextException"), "{wrong}");
    let mut tampered = blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    std::fs::write(&blob_file, &tampered).unwrap();
    let altered =
        s.aws_err(&["kms", "decrypt", "--ciphertext-blob", &blob_arg, "--encryption-context", "tenant=a,purpose=test"]);
    assert!(altered.contains("InvalidCiphertextException"), "{altered}");
    std::fs::write(&blob_file, &blob).unwrap();

    // Disabled: refused; enabled again: works.
    s.aws_json(&["kms", "disable-key", "--key-id", &id]);
    let disabled =
        s.aws_err(&["kms", "encrypt", "--key-id", &id, "--plaintext", &format!("fileb://{}", plain_file.display())]);
    assert!(disabled.contains("DisabledException"), "{disabled}");
    s.aws_json(&["kms", "enable-key", "--key-id", &id]);
    s.aws_json(&["kms", "decrypt", "--ciphertext-blob", &blob_arg, "--encryption-context", "tenant=a,purpose=test"]);

    // The AWS managed key is made on first use.
    let ssm_key = s.aws_json(&["kms", "describe-key", "--key-id", "alias/aws/ssm"]);
    assert_eq!(ssm_key["KeyMetadata"]["KeyManager"], "AWS");
    let missing = s.aws_err(&["kms", "describe-key", "--key-id", "alias/nope"]);
    assert!(missing.contains("NotFoundException"), "{missing}");
    let unknown = s.aws_err(&["kms", "describe-key", "--key-id", "00000000-0000-0000-0000-000000000000"]);
    assert!(unknown.contains("NotFoundException"), "{unknown}");
    let rsa = s.aws_err(&["kms", "create-key", "--key-spec", "RSA_2048"]);
    assert!(rsa.contains("UnsupportedOperationException"), "{rsa}");
    let garbage = s.aws_err(&["kms", "decrypt", "--ciphertext-blob", &b64(b"not a blob at all")]);
    assert!(garbage.contains("InvalidCiphertextException"), "{garbage}");
    s.aws_json(&["kms", "delete-alias", "--alias-name", "alias/app"]);
    let gone = s.aws_err(&[
        "kms",
        "encrypt",
        "--key-id",
        "alias/app",
        "--plaintext",
        &format!("fileb://{}", plain_file.display()),
    ]);
    assert!(gone.contains("NotFoundException"), "{gone}");
}

#[test]
fn secure_strings_and_secrets_are_ciphertext_at_rest_and_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(data.path());
    let key = s.aws_json(&["kms", "create-key", "--description", "mine"]);
    let key_arn = key["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    s.aws_json(&["kms", "create-alias", "--alias-name", "alias/mine", "--target-key-id", &key_arn]);
    let values =
        ["param-default-Zq81x", "param-mine-Yw72k", "secret-default-Xp63j", "secret-mine-Wn54h", "secret-two-Vm45g"];
    s.aws_json(&["ssm", "put-parameter", "--name", "/at-rest/a", "--type", "SecureString", "--value", values[0]]);
    s.aws_json(&[
        "ssm",
        "put-parameter",
        "--name",
        "/at-rest/b",
        "--type",
        "SecureString",
        "--key-id",
        "alias/mine",
        "--value",
        values[1],
    ]);
    s.aws_json(&["secretsmanager", "create-secret", "--name", "at-rest/a", "--secret-string", values[2]]);
    let mine = s.aws_json(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "at-rest/b",
        "--kms-key-id",
        "alias/mine",
        "--secret-string",
        values[3],
    ]);
    s.aws_json(&["secretsmanager", "put-secret-value", "--secret-id", "at-rest/b", "--secret-string", values[4]]);
    let bad_key = s.aws_err(&[
        "ssm",
        "put-parameter",
        "--name",
        "/at-rest/c",
        "--type",
        "SecureString",
        "--key-id",
        "alias/nope",
        "--value",
        "v",
    ]);
    assert!(bad_key.contains("InvalidKeyId"), "{bad_key}");

    // Without decryption, a SecureString is its real ciphertext: KMS decrypts it with the
    // parameter's ARN as context, as on AWS.
    let hidden = s.aws_json(&["ssm", "get-parameter", "--name", "/at-rest/b"]);
    let ciphertext = hidden["Parameter"]["Value"].as_str().unwrap();
    assert!(!ciphertext.contains("param-mine"), "{hidden}");
    let blob_file = work.path().join("param.blob");
    std::fs::write(&blob_file, unb64(ciphertext)).unwrap();
    let param_arn = hidden["Parameter"]["ARN"].as_str().unwrap();
    let opened = s.aws_json(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &format!("fileb://{}", blob_file.display()),
        "--encryption-context",
        &format!("PARAMETER_ARN={param_arn}"),
    ]);
    assert_eq!(unb64(opened["Plaintext"].as_str().unwrap()), values[1].as_bytes());
    assert_eq!(opened["KeyId"].as_str(), Some(key_arn.as_str()));
    let described = s.aws_json(&["ssm", "describe-parameters"]);
    let key_ids: Vec<&str> =
        described["Parameters"].as_array().unwrap().iter().map(|p| p["KeyId"].as_str().unwrap()).collect();
    assert_eq!(key_ids, ["alias/aws/ssm", "alias/mine"]);
    assert_eq!(
        s.aws_json(&["secretsmanager", "describe-secret", "--secret-id", "at-rest/b"])["KmsKeyId"],
        "alias/mine"
    );
    let secrets_key = s.aws_json(&["kms", "describe-key", "--key-id", "alias/aws/secretsmanager"]);
    assert_eq!(secrets_key["KeyMetadata"]["KeyManager"], "AWS");

    s.kill9();
    let s = Server::start_in(data.path());
    let read = |name: &str| {
        s.aws_json(&["ssm", "get-parameter", "--name", name, "--with-decryption"])["Parameter"]["Value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!((read("/at-rest/a"), read("/at-rest/b")), (values[0].to_owned(), values[1].to_owned()));
    let by_path = s.aws_json(&["ssm", "get-parameters-by-path", "--path", "/at-rest", "--with-decryption"]);
    let shown: Vec<&str> =
        by_path["Parameters"].as_array().unwrap().iter().map(|p| p["Value"].as_str().unwrap()).collect();
    assert_eq!(shown, [values[0], values[1]]);
    let secret = |id: &str, stage: &str| {
        s.aws_json(&["secretsmanager", "get-secret-value", "--secret-id", id, "--version-stage", stage])["SecretString"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(secret("at-rest/a", "AWSCURRENT"), values[2]);
    assert_eq!(secret(mine["ARN"].as_str().unwrap(), "AWSPREVIOUS"), values[3]);
    assert_eq!(secret("at-rest/b", "AWSCURRENT"), values[4]);

    // Nothing in the data dir holds a value: not the store, not the logs.
    for value in values {
        assert_eq!(files_holding(data.path(), value.as_bytes()), Vec::<String>::new(), "{value} is in the data dir");
    }
    // The master key lives apart from the data dir, the owner's alone.
    let key_file = Path::new("/etc/flotilla/kms.key");
    assert_eq!(std::fs::metadata(key_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(key_file).unwrap().len(), 32);
}

/// `flotilla up --no-agent` on `data`, with these flags: its output once it listens or exits.
fn up(data: &Path, extra: &[&str]) -> (Output, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--no-agent", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("FLOTILLA_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let endpoint = data.join("endpoint");
    let mut exited = false;
    common::wait_for("flotilla up to listen or exit", Duration::from_secs(30), || {
        exited = child.try_wait().unwrap().is_some();
        exited || endpoint.exists()
    });
    let _ = std::fs::remove_file(&endpoint);
    let _ = child.kill();
    (child.wait_with_output().unwrap(), !exited)
}

#[test]
fn key_files_in_the_data_dir_open_to_others_or_of_another_store_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let inside = data.path().join("sub/kms.key");
    let (out, ran) = up(data.path(), &["--kms-key-file", inside.to_str().unwrap()]);
    assert!(!ran && stderr(&out).contains("inside the data dir"), "{}", stderr(&out));
    assert!(!inside.exists());

    let open = keys.path().join("open.key");
    std::fs::write(&open, [1u8; 32]).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, ran) = up(data.path(), &["--kms-key-file", open.to_str().unwrap()]);
    assert!(!ran && stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    let first = keys.path().join("dir/first.key");
    let (out, ran) = up(data.path(), &["--kms-key-file", first.to_str().unwrap()]);
    assert!(ran, "{}", stderr(&out));
    let banner = String::from_utf8_lossy(&out.stdout);
    assert!(banner.contains(&format!("KMS key file: {} (made now", first.display())), "{banner}");
    assert_eq!(std::fs::metadata(&first).unwrap().permissions().mode() & 0o777, 0o600);

    let second = keys.path().join("second.key");
    let (out, ran) = up(data.path(), &["--kms-key-file", second.to_str().unwrap()]);
    assert!(!ran && stderr(&out).contains("--kms-key-file"), "{}", stderr(&out));
    assert!(stderr(&out).contains("master key"), "{}", stderr(&out));

    let (out, ran) = up(data.path(), &["--kms-key-file", first.to_str().unwrap()]);
    assert!(ran, "the right key file again: {}", stderr(&out));
}

/// The AWS CLI as the IAM user whose access key this is.
fn aws_as(s: &Server, (key, secret): (&str, &str), args: &[&str]) -> Output {
    let mut command = s.aws_command();
    command.env("AWS_ACCESS_KEY_ID", key).env("AWS_SECRET_ACCESS_KEY", secret).args(args);
    command.output().expect("the aws CLI runs")
}

#[test]
fn reading_a_secure_string_with_decryption_needs_kms_decrypt_on_its_key() {
    let s = Server::start_no_agent();
    let mine = s.aws_json(&["kms", "create-key"])["KeyMetadata"]["Arn"].as_str().unwrap().to_owned();
    s.aws_json(&["ssm", "put-parameter", "--name", "/z/default", "--type", "SecureString", "--value", "v-default"]);
    s.aws_json(&[
        "ssm",
        "put-parameter",
        "--name",
        "/z/mine",
        "--type",
        "SecureString",
        "--key-id",
        &mine,
        "--value",
        "v-mine",
    ]);
    s.aws_json(&["iam", "create-user", "--user-name", "reader"]);
    let key = s.aws_json(&["iam", "create-access-key", "--user-name", "reader"]);
    let user =
        (key["AccessKey"]["AccessKeyId"].as_str().unwrap(), key["AccessKey"]["SecretAccessKey"].as_str().unwrap());
    let policy = |name: &str, statement: serde_json::Value| {
        let document = serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}).to_string();
        let args =
            ["iam", "put-user-policy", "--user-name", "reader", "--policy-name", name, "--policy-document", &document];
        s.aws_json(&args);
    };
    policy("ssm", serde_json::json!({"Effect": "Allow", "Action": "ssm:GetParameter*", "Resource": "*"}));
    let plain = ["ssm", "get-parameter", "--name", "/z/mine"];
    let decrypted = ["ssm", "get-parameter", "--name", "/z/mine", "--with-decryption"];
    common::wait_for("the reader's policy", Duration::from_secs(10), || aws_as(&s, user, &plain).status.success());
    let shown: serde_json::Value = serde_json::from_slice(&aws_as(&s, user, &plain).stdout).unwrap();
    assert_ne!(shown["Parameter"]["Value"], "v-mine");
    let denied = aws_as(&s, user, &decrypted);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success() && stderr.contains("AccessDeniedException") && stderr.contains("kms:Decrypt"),
        "{stderr}"
    );
    let encrypt = aws_as(&s, user, &["kms", "encrypt", "--key-id", &mine, "--plaintext", &b64(b"x")]);
    assert!(String::from_utf8_lossy(&encrypt.stderr).contains("AccessDeniedException"), "{encrypt:?}");

    policy("kms", serde_json::json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": mine}));
    common::wait_for("kms:Decrypt on my key", Duration::from_secs(10), || {
        aws_as(&s, user, &decrypted).status.success()
    });
    let opened: serde_json::Value = serde_json::from_slice(&aws_as(&s, user, &decrypted).stdout).unwrap();
    assert_eq!(opened["Parameter"]["Value"], "v-mine");
    // The default key is another key: still refused, and so is a batch that includes it.
    let other = aws_as(&s, user, &["ssm", "get-parameter", "--name", "/z/default", "--with-decryption"]);
    assert!(String::from_utf8_lossy(&other.stderr).contains("AccessDeniedException"), "{other:?}");
    let batch = aws_as(&s, user, &["ssm", "get-parameters", "--names", "/z/mine", "/z/default", "--with-decryption"]);
    assert!(String::from_utf8_lossy(&batch.stderr).contains("AccessDeniedException"), "{batch:?}");
}
