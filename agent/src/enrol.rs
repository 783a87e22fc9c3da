//! Key ceremonies: enrol a credential, seal an upstream credential under it,
//! and approve-then-unseal for an issuance. Every assertion is verified
//! (signature, our challenge, UP, counter) BEFORE anything is unsealed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use touchgate::{EnrolledReply, ErrorCode, ErrorReply, Secret};
use zeroize::Zeroizing;

use crate::agent::{enrolled_reply, Agent, Progress};
use crate::caller::Caller;
use crate::ceremony;
use crate::key::{GetAssertionRequest, MakeCredentialRequest, RP_ID};
use crate::upstream::UpstreamCredential;
use crate::vault::{Dek, Enrolment, VaultFile};
use crate::verify::{self, Expected, VerifyError};

fn not_enrolled() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotEnrolled,
        "no security key is enrolled: run touchgate enroll first",
    )
}

fn vault_error(e: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorCode::Vault, e.to_string())
}

impl Agent {
    /// Create a credential on the key and record it.
    pub async fn enroll(
        self: &Arc<Self>,
        caller: &Caller,
        force: bool,
        progress: Progress,
    ) -> Result<EnrolledReply, ErrorReply> {
        let mut vault = self.vault.lock().await;
        if let (Some(e), false) = (vault.enrolment(), force) {
            return Err(ErrorReply::new(
                ErrorCode::AlreadyEnrolled,
                format!(
                    "a key is already enrolled (credential {}): run touchgate enroll --force to replace it (credentials sealed under it become unreadable)",
                    enrolled_reply(e).credential
                ),
            ));
        }
        let (challenge, cdh) =
            ceremony::challenge("enroll", &[&caller.to_string()], self.clock.unix_now());
        let mut user_id = vec![0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut user_id);
        let req = MakeCredentialRequest {
            rp_id: RP_ID.into(),
            challenge,
            user_id,
            user_name: "touchgate".into(),
            hmac_secret: true,
            uv: false,
            pin: None,
        };
        let prompt = format!("touch your security key to enrol it with touchgate ({caller} asks)");
        let att = ceremony::run(
            self.key.clone(),
            self.config.agent.touch_timeout,
            move || {
                tracing::info!("{prompt}");
                let _ = progress.send(prompt);
            },
            move |k| k.make_credential(&req),
        )
        .await?;
        self.touches.fetch_add(1, Ordering::Relaxed);
        verify::check_attestation(&att, &cdh, RP_ID)
            .map_err(|e| ErrorReply::new(ErrorCode::KeyVerification, e.to_string()))?;
        if !att.hmac_secret {
            return Err(ErrorReply::new(
                ErrorCode::Key,
                format!(
                    "the security key {} does not support hmac-secret, which touchgate needs to seal credentials: use a FIDO2 key with hmac-secret",
                    self.key.name()
                ),
            ));
        }
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        let enrolment = Enrolment {
            credential_id: att.credential_id.clone(),
            public_key_sec1: att.public_key_sec1.clone(),
            aaguid: att.aaguid,
            sign_count: att.sign_count,
            key_name: self.key.name(),
            hmac_salt: salt,
            uv: false,
            attestation_format: att.format.clone(),
            created_at: self.clock.unix_now(),
        };
        // A new enrolment starts a new vault: old sealed entries could never be opened again.
        let mut next = VaultFile::default();
        next.enrolments.push(enrolment);
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        self.sessions.lock().unwrap().lock();
        let reply = enrolled_reply(vault.enrolment().expect("just enrolled"));
        tracing::info!(%caller, credential = %reply.credential, key = %reply.key_name, "enrolled a security key");
        Ok(reply)
    }

    /// Seal an upstream credential under the enrolled key (one touch).
    pub async fn import(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        credential_json: Secret,
        progress: Progress,
    ) -> Result<&'static str, ErrorReply> {
        valid_name(name)?;
        // Parse first: a bad file must not cost a touch.
        let cred = UpstreamCredential::parse(credential_json.expose())
            .map_err(|e| ErrorReply::new(ErrorCode::BadCredential, e.to_string()))?;
        let kind = cred.kind();
        drop(cred);
        let prompt =
            format!("touch your security key to seal credential \"{name}\" ({caller} asks)");
        let mut vault = self.vault.lock().await;
        let (dek, enrolment) = self
            .assert_and_unlock(
                &mut vault,
                &[&caller.to_string(), name],
                "import",
                prompt,
                move |p| {
                    let _ = progress.send(p);
                },
            )
            .await?;
        let mut next = vault.clone();
        next.enrolments[0] = enrolment;
        next.seal(&dek, name, kind, credential_json.expose().as_bytes())
            .map_err(vault_error)?;
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        tracing::info!(%caller, credential = name, kind, "sealed an upstream credential");
        Ok(kind)
    }

    /// Touch, verify, unlock and open the sealed credential `credential`.
    pub(crate) async fn approve_and_unseal(
        &self,
        credential: &str,
        purpose: &[String],
        prompt: String,
        on_touch: impl FnOnce(String) + Send + 'static,
    ) -> Result<UpstreamCredential, ErrorReply> {
        let mut vault = self.vault.lock().await;
        if vault.enrolment().is_none() {
            return Err(not_enrolled());
        }
        if !vault.entry_names().iter().any(|n| n == credential) {
            return Err(ErrorReply::new(
                ErrorCode::UnknownCredential,
                format!("no credential named \"{credential}\" is sealed: run touchgate import FILE --name {credential}"),
            ));
        }
        let parts: Vec<&str> = purpose.iter().map(String::as_str).collect();
        let (dek, enrolment) = self
            .assert_and_unlock(&mut vault, &parts, "get-token", prompt, on_touch)
            .await?;
        let (_kind, plaintext) = vault.open(&dek, credential).map_err(vault_error)?;
        drop(dek);
        let text = std::str::from_utf8(&plaintext).map_err(|_| {
            ErrorReply::new(
                ErrorCode::Vault,
                format!("sealed credential \"{credential}\" is not text: import it again"),
            )
        })?;
        let cred = UpstreamCredential::parse(text)
            .map_err(|e| ErrorReply::new(ErrorCode::BadCredential, e.to_string()))?;
        // The counter is saved only once everything checked out.
        let mut next = vault.clone();
        next.enrolments[0] = enrolment;
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        Ok(cred)
    }

    /// One getAssertion with the vault salt: verify it, then unlock the data key
    /// (creating the key's slot on first use). Returns the key and the enrolment
    /// with its new counter; the caller saves.
    async fn assert_and_unlock(
        &self,
        vault: &mut VaultFile,
        parts: &[&str],
        purpose: &str,
        prompt: String,
        on_touch: impl FnOnce(String) + Send + 'static,
    ) -> Result<(Dek, Enrolment), ErrorReply> {
        let mut enrolment = vault.enrolment().cloned().ok_or_else(not_enrolled)?;
        let (challenge, cdh) = ceremony::challenge(purpose, parts, self.clock.unix_now());
        let req = GetAssertionRequest {
            rp_id: RP_ID.into(),
            challenge,
            allow: vec![enrolment.credential_id.clone()],
            hmac_salt: Some(enrolment.hmac_salt),
            uv: enrolment.uv,
            pin: None,
            up: true,
        };
        let assertion = ceremony::run(
            self.key.clone(),
            self.config.agent.touch_timeout,
            move || {
                tracing::info!("{prompt}");
                on_touch(prompt);
            },
            move |k| k.get_assertion(&req),
        )
        .await?;
        self.touches.fetch_add(1, Ordering::Relaxed);
        let expected = Expected {
            rp_id: RP_ID,
            credential_id: &enrolment.credential_id,
            public_key_sec1: &enrolment.public_key_sec1,
            stored_sign_count: enrolment.sign_count,
            require_uv: enrolment.uv,
        };
        let verified = verify::verify_assertion(&expected, &cdh, &assertion).map_err(|e| {
            if matches!(e, VerifyError::CounterNotIncreased { .. }) {
                tracing::error!(alert = "possible-cloned-key", key = %enrolment.key_name, "ALERT: {e}");
            } else {
                tracing::warn!("security key answer refused: {e}");
            }
            ErrorReply::new(ErrorCode::KeyVerification, e.to_string())
        })?;
        enrolment.sign_count = verified.sign_count;
        let hmac = assertion.hmac_secret.as_ref().ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::Key,
                "the security key returned no hmac-secret output: it cannot unseal the vault",
            )
        })?;
        let hmac: Zeroizing<[u8; 32]> = Zeroizing::new(**hmac);
        let dek = match vault.unlock(&enrolment.credential_id, &hmac) {
            Ok(d) => d,
            Err(crate::vault::VaultError::NoSlot) => vault
                .create_slot(&enrolment.credential_id, &hmac)
                .map_err(vault_error)?,
            Err(e) => return Err(vault_error(e)),
        };
        Ok((dek, enrolment))
    }
}

fn valid_name(name: &str) -> Result<(), ErrorReply> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ErrorReply::new(
            ErrorCode::BadCredential,
            format!("credential name \"{}\" is not allowed: use up to 64 letters, digits, '-', '_' or '.'", name.escape_default()),
        ))
    }
}
