//! Key ceremonies: enrol a credential, add and remove keys, seal an upstream
//! credential, and approve-then-unseal for an issuance. Every assertion is
//! verified (signature, our challenge, UP, counter) BEFORE anything is unsealed.
//!
//! All enrolled keys share the vault's hmac-secret salt and UV setting, so one
//! getAssertion with every enrolled credential in the allow-list can be
//! answered by whichever key is plugged in.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use secrecy::SecretString;
use touchgate::sync::MutexExt;
use touchgate::{CallerHint, EnrolledReply, ErrorCode, KeyInfo, Secret};
use zeroize::Zeroizing;

use crate::audit::{Approved, ChallengeInputs, Record, TouchEvidence};
use crate::caller::Caller;
use crate::fido::attestation;
use crate::fido::ids::{format_aaguid, short_id};
use crate::fido::key::{
    Assertion, Attestation, GetAssertionRequest, KeyError, MakeCredentialRequest, SecurityKey,
    RP_ID,
};
use crate::fido::pin::PinContext;
use crate::fido::verify::{self, Expected, VerifyError};
use crate::service::agent::{enrolled_reply, Agent, Progress};
use crate::service::ceremony::{self, Waiters};
use crate::service::error::AgentError;
use crate::upstream::UpstreamCredential;
use crate::vault::{Dek, Enrolment, VaultFile};

fn not_enrolled() -> AgentError {
    AgentError::new(
        ErrorCode::NotEnrolled,
        "no security key is enrolled: run touchgate enroll first",
    )
}

fn vault_error(e: impl std::fmt::Display) -> AgentError {
    AgentError::new(ErrorCode::Vault, e.to_string())
}

/// The connection that asked: told when the key wants a touch, gone when the
/// client hangs up (the server then drops the receiving end of `progress`).
fn notify(progress: Progress) -> Waiters {
    let closed = progress.clone();
    Waiters::new(
        move |p| {
            let _ = progress.send(p);
        },
        move || {
            let closed = closed.clone();
            Box::pin(async move { closed.closed().await })
        },
    )
}

/// A key operation that may be run twice (again with a PIN).
type KeyOp<T> =
    Arc<dyn Fn(&dyn SecurityKey, Option<SecretString>) -> Result<T, KeyError> + Send + Sync>;

impl Agent {
    /// Run `op` on the key; if the key wants a PIN, ask for it on the caller's
    /// display or terminal and run it once more with the PIN.
    async fn key_op<T: Send + 'static>(
        &self,
        hint: &CallerHint,
        prompt: &str,
        notify: &Waiters,
        op: KeyOp<T>,
    ) -> Result<T, AgentError> {
        let mut pin: Option<SecretString> = None;
        loop {
            let (o, p, pr, tx) = (op.clone(), pin.clone(), prompt.to_owned(), notify.clone());
            let res = ceremony::run_raw(
                self.key.clone(),
                self.config().agent.touch_timeout,
                move || {
                    tracing::info!("{pr}");
                    tx.touch_needed(pr);
                },
                notify.gone(),
                move |k| o(k, p),
            )
            .await?;
            match res {
                Ok(v) => return Ok(v),
                Err(KeyError::PinRequired) if pin.is_none() => {
                    pin = Some(self.ask_pin(hint, prompt).await?);
                }
                Err(e) => return Err(ceremony::key_error(e)),
            }
        }
    }

    async fn ask_pin(&self, hint: &CallerHint, why: &str) -> Result<SecretString, AgentError> {
        let entry = self.pin_entry.clone();
        let ctx = PinContext::from_hint(hint);
        let desc = format!(
            "Enter the PIN of your {} ({})",
            self.key.name(),
            why.trim_start_matches("touch your security key")
                .trim_start_matches([':', ' '])
        );
        tokio::task::spawn_blocking(move || entry.ask(&desc, None, &ctx))
            .await
            .map_err(|e| {
                AgentError::new(ErrorCode::Internal, format!("PIN entry task failed: {e}"))
            })?
            .map_err(|e| AgentError::new(ErrorCode::Pin, e.to_string()))
    }

    /// makeCredential on the key (excluding already enrolled credentials), checked.
    async fn new_credential(
        &self,
        caller: &Caller,
        hint: &CallerHint,
        uv: bool,
        exclude: Vec<Vec<u8>>,
        notify: &Waiters,
    ) -> Result<Attestation, AgentError> {
        // Read the attestation roots first: a bad root file must not cost a touch.
        let roots = attestation::load_roots(&self.config().key.attestation_roots)
            .map_err(|e| AgentError::new(ErrorCode::Config, e.to_string()))?;
        let (challenge, cdh) =
            ceremony::challenge("enroll", &[&caller.to_string()], self.clock.unix_now());
        let mut user_id = vec![0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut user_id);
        let prompt = format!("touch your security key to enrol it with touchgate ({caller} asks)");
        let op: KeyOp<Attestation> = Arc::new(move |k, pin| {
            k.make_credential(&MakeCredentialRequest {
                rp_id: RP_ID.into(),
                challenge,
                user_id: user_id.clone(),
                user_name: "touchgate".into(),
                hmac_secret: true,
                uv,
                pin,
                exclude: exclude.clone(),
            })
        });
        let att = self.key_op(hint, &prompt, notify, op).await?;
        self.touches.fetch_add(1, Ordering::Relaxed);
        verify::check_attestation(&att, &cdh, RP_ID, uv)
            .map_err(|e| AgentError::new(ErrorCode::KeyVerification, e.to_string()))?;
        if !att.hmac_secret {
            return Err(AgentError::new(
                ErrorCode::Key,
                format!(
                    "the {} does not support hmac-secret, which touchgate needs to seal credentials: use a FIDO2 key with hmac-secret",
                    self.key.name()
                ),
            ));
        }
        let aaguid = format_aaguid(&att.aaguid);
        let config = self.config();
        let allowed = &config.key.allowed_aaguids;
        if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&aaguid)) {
            return Err(AgentError::new(
                ErrorCode::Key,
                format!("this security key's model (AAGUID {aaguid}) is not in key.allowed_aaguids: use an allowed key or add it to the config"),
            ));
        }
        if !roots.is_empty() {
            let chain = attestation::verify_packed_chain(&att, &cdh, &roots, self.clock.now())
                .map_err(|e| {
                    tracing::warn!(aaguid = %aaguid, "attestation refused: {e}");
                    AgentError::new(ErrorCode::KeyVerification, e.to_string())
                })?;
            tracing::info!(
                aaguid = %aaguid,
                leaf = %chain.leaf_subject,
                root = %chain.root_subject,
                certificates = chain.chain_len,
                "security key attestation chains to a configured root"
            );
        }
        Ok(att)
    }

    fn enrolment_from(&self, att: &Attestation, salt: [u8; 32], uv: bool) -> Enrolment {
        Enrolment {
            credential_id: att.credential_id.clone(),
            public_key_sec1: att.public_key_sec1.clone(),
            aaguid: att.aaguid,
            sign_count: att.sign_count,
            key_name: self.key.name(),
            hmac_salt: salt,
            uv,
            attestation_format: att.format.clone(),
            created_at: self.clock.unix_now(),
            attestation_cert: att.x5c.first().cloned().unwrap_or_default(),
            suspect: None,
        }
    }

    /// Create a credential on the key and record it (a new vault).
    pub async fn enroll(
        self: &Arc<Self>,
        caller: &Caller,
        force: bool,
        uv: bool,
        hint: &CallerHint,
        progress: Progress,
    ) -> Result<EnrolledReply, AgentError> {
        let notify = notify(progress);
        let mut vault = self.vault.lock().await;
        let mut approval = None;
        if let Some(e) = vault.enrolment() {
            if !force {
                return Err(AgentError::new(
                    ErrorCode::AlreadyEnrolled,
                    format!(
                        "a key is already enrolled (credential {}): add a backup with touchgate keys add, or run touchgate enroll --force to start over (with a touch on an enrolled key; the old vault is kept as a backup file)",
                        enrolled_reply(e).credential
                    ),
                ));
            }
            // Replacing the vault is for its owner: a verified touch on an enrolled, trusted key.
            let (dek, _used, evidence) = self
                .assert_and_unlock(
                    &mut vault,
                    &Approved::by(caller, None),
                    "replace-vault",
                    hint,
                    format!("touch an ENROLLED security key to approve starting over with a new vault ({caller} asks)"),
                    &notify,
                )
                .await?;
            drop(dek);
            approval = Some(evidence);
        }
        let att = self
            .new_credential(caller, hint, uv, vec![], &notify)
            .await?;
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
        // A new enrolment starts a new vault: old sealed entries could never be opened again,
        // so the old file is kept (0600) beside it first.
        let backup = match approval {
            Some(_) => self.backup_vault().map_err(vault_error)?,
            None => None,
        };
        let mut next = VaultFile::default();
        next.enrolments.push(self.enrolment_from(&att, salt, uv));
        // The old keys' public halves stay: the audit records they signed still verify.
        next.retired = vault.retired.clone();
        next.retired
            .extend(vault.enrolments.iter().map(crate::vault::RetiredKey::from));
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        self.sessions.locked().lock();
        let mut reply = enrolled_reply(vault.enrolment().expect("just enrolled"));
        reply.backup = backup.map(|p| p.display().to_string());
        match &reply.backup {
            Some(b) => {
                tracing::warn!(%caller, credential = %reply.credential, key = %reply.key_name, uv, backup = %b, "enrolled a security key in a new vault; the old vault is kept in the backup")
            }
            None => {
                tracing::info!(%caller, credential = %reply.credential, key = %reply.key_name, uv, "enrolled a security key")
            }
        }
        let e = vault.enrolment().expect("just enrolled");
        self.record(Record {
            time: self.clock.unix_now(),
            event: "enrolled".into(),
            caller: Some(caller.into()),
            credential: Some(hex::encode(&e.credential_id)),
            public_key: Some(hex::encode(&e.public_key_sec1)),
            touch: approval,
            ..Default::default()
        })
        .await?;
        Ok(reply)
    }

    /// Copy the vault file to `vault.json.bak-UNIXTIME[-N]` beside it (0600,
    /// atomically); its path, or `None` when there is no vault file.
    fn backup_vault(&self) -> std::io::Result<Option<std::path::PathBuf>> {
        let path = &self.paths.vault;
        let bytes = match std::fs::read(path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "vault.json".into());
        let stem = format!("{name}.bak-{}", self.clock.unix_now());
        let mut backup = path.with_file_name(&stem);
        let mut n = 1;
        while backup.exists() {
            n += 1;
            backup = path.with_file_name(format!("{stem}-{n}"));
        }
        crate::vault::write_private_atomic(&backup, &bytes)?;
        Ok(Some(backup))
    }

    /// Enrol another key: unlock with an enrolled key, then create a credential on
    /// the new one and wrap the vault's data key for it.
    pub async fn add_key(
        self: &Arc<Self>,
        caller: &Caller,
        hint: &CallerHint,
        progress: Progress,
    ) -> Result<EnrolledReply, AgentError> {
        let notify = notify(progress);
        let mut vault = self.vault.lock().await;
        let first = vault.enrolment().cloned().ok_or_else(not_enrolled)?;
        let (dek, used, approval) = self
            .assert_and_unlock(
                &mut vault,
                &Approved::by(caller, None),
                "add-key",
                hint,
                format!("touch an ENROLLED security key to approve adding another ({caller} asks)"),
                &notify,
            )
            .await?;
        let exclude: Vec<Vec<u8>> = vault
            .enrolments
            .iter()
            .map(|e| e.credential_id.clone())
            .collect();
        let att = self
            .new_credential(caller, hint, first.uv, exclude, &notify)
            .await?;
        let mut next = vault.clone();
        replace_enrolment(&mut next, used);
        next.enrolments
            .push(self.enrolment_from(&att, first.hmac_salt, first.uv));
        // One more touch on the new key: its hmac-secret wraps the data key.
        let (challenge, cdh) = ceremony::challenge(
            "add-key-slot",
            &[&caller.to_string()],
            self.clock.unix_now(),
        );
        let (cred, salt, uv) = (att.credential_id.clone(), first.hmac_salt, first.uv);
        let op: KeyOp<Assertion> = Arc::new(move |k, pin| {
            k.get_assertion(&GetAssertionRequest {
                rp_id: RP_ID.into(),
                challenge,
                allow: vec![cred.clone()],
                hmac_salt: Some(salt),
                uv,
                pin,
                up: true,
            })
        });
        let prompt =
            format!("touch the NEW security key once more to finish adding it ({caller} asks)");
        let assertion = self.key_op(hint, &prompt, &notify, op).await?;
        self.touches.fetch_add(1, Ordering::Relaxed);
        let new = next.enrolments.last().expect("pushed").clone();
        let verified = verify::verify_assertion(&expected(&new), &cdh, &assertion)
            .map_err(|e| AgentError::new(ErrorCode::KeyVerification, e.to_string()))?;
        next.enrolments.last_mut().expect("pushed").sign_count = verified.sign_count;
        let hmac = hmac_output(&assertion)?;
        next.add_slot(&att.credential_id, &hmac, &dek)
            .map_err(vault_error)?;
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        let reply = enrolled_reply(&new);
        tracing::info!(%caller, credential = %reply.credential, key = %reply.key_name, "added a security key");
        self.record(Record {
            time: self.clock.unix_now(),
            event: "key-added".into(),
            caller: Some(caller.into()),
            credential: Some(hex::encode(&new.credential_id)),
            public_key: Some(hex::encode(&new.public_key_sec1)),
            touch: Some(approval),
            ..Default::default()
        })
        .await?;
        Ok(reply)
    }

    /// Unlock: a verified touch on an enrolled key.
    pub async fn unlock(
        self: &Arc<Self>,
        caller: &Caller,
        hint: &CallerHint,
        progress: Progress,
    ) -> Result<(), AgentError> {
        if !self.lock_state.is_locked() {
            return Ok(());
        }
        let mut vault = self.vault.lock().await;
        let (dek, used, evidence) = self
            .assert_and_unlock(
                &mut vault,
                &Approved::by(caller, None),
                "unlock",
                hint,
                format!("touch your security key to unlock touchgate ({caller} asks)"),
                &notify(progress),
            )
            .await?;
        drop(dek);
        let mut next = vault.clone();
        replace_enrolment(&mut next, used);
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        // Recorded before it takes effect: an unlock the log cannot hold stays locked.
        self.record(Record {
            time: self.clock.unix_now(),
            event: "unlocked".into(),
            caller: Some(caller.into()),
            touch: Some(evidence),
            ..Default::default()
        })
        .await?;
        self.lock_state.unlock();
        self.touch_last_use();
        tracing::info!(%caller, "unlocked");
        Ok(())
    }

    pub async fn list_keys(&self) -> Vec<KeyInfo> {
        self.vault
            .lock()
            .await
            .enrolments
            .iter()
            .map(key_info)
            .collect()
    }

    /// Forget an enrolled key (never the last one), after a verified touch on an
    /// enrolled, trusted key.
    pub async fn remove_key(
        &self,
        caller: &Caller,
        prefix: &str,
        hint: &CallerHint,
        progress: Progress,
    ) -> Result<String, AgentError> {
        let mut vault = self.vault.lock().await;
        let id = find_key(&vault, prefix)?;
        if vault.enrolments.len() == 1 {
            return Err(AgentError::new(
                ErrorCode::Key,
                "this is the last enrolled key, and removing it would lock the sealed credentials away for good: add another key first (touchgate keys add)",
            ));
        }
        let short = short_id(&id);
        let (dek, used, evidence) = self
            .assert_and_unlock(
                &mut vault,
                &Approved::by(caller, Some(hex::encode(&id))),
                "remove-key",
                hint,
                format!("touch an ENROLLED security key to approve removing key {short} ({caller} asks)"),
                &notify(progress),
            )
            .await?;
        drop(dek);
        let mut next = vault.clone();
        replace_enrolment(&mut next, used);
        next.remove_key(&id);
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        tracing::info!(%caller, credential = %short, "removed a security key");
        self.record(Record {
            time: self.clock.unix_now(),
            event: "key-removed".into(),
            caller: Some(caller.into()),
            credential: Some(hex::encode(&id)),
            touch: Some(evidence),
            ..Default::default()
        })
        .await?;
        Ok(short)
    }

    /// Trust a suspect key again, after a verified touch on another enrolled,
    /// trusted key (a suspect key never approves its own trust).
    pub async fn trust_key(
        &self,
        caller: &Caller,
        prefix: &str,
        hint: &CallerHint,
        progress: Progress,
    ) -> Result<String, AgentError> {
        let mut vault = self.vault.lock().await;
        let id = find_key(&vault, prefix)?;
        let short = short_id(&id);
        if vault
            .enrolment_for(&id)
            .is_some_and(|e| e.suspect.is_none())
        {
            return Ok(short);
        }
        let (dek, used, evidence) = self
            .assert_and_unlock(
                &mut vault,
                &Approved::by(caller, Some(hex::encode(&id))),
                "trust-key",
                hint,
                format!("touch a TRUSTED enrolled security key to approve trusting key {short} again ({caller} asks)"),
                &notify(progress),
            )
            .await?;
        drop(dek);
        let mut next = vault.clone();
        replace_enrolment(&mut next, used);
        if let Some(e) = next.enrolment_for_mut(&id) {
            e.suspect = None;
        }
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        tracing::warn!(%caller, credential = %short, "a suspect security key was trusted again by the user");
        self.record(Record {
            time: self.clock.unix_now(),
            event: "key-trusted".into(),
            caller: Some(caller.into()),
            credential: Some(hex::encode(&id)),
            touch: Some(evidence),
            ..Default::default()
        })
        .await?;
        Ok(short)
    }

    /// Seal an upstream credential under the enrolled keys (one touch).
    pub async fn import(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        credential_json: Secret,
        hint: &CallerHint,
        progress: Progress,
    ) -> Result<&'static str, AgentError> {
        valid_name(name)?;
        // Parse first: a bad file must not cost a touch.
        let cred = UpstreamCredential::parse(credential_json.expose())
            .map_err(|e| AgentError::new(ErrorCode::BadCredential, e.to_string()))?;
        let kind = cred.kind();
        drop(cred);
        let prompt =
            format!("touch your security key to seal credential \"{name}\" ({caller} asks)");
        let mut vault = self.vault.lock().await;
        let (dek, used, evidence) = self
            .assert_and_unlock(
                &mut vault,
                &Approved::by(caller, Some(name.to_owned())),
                "import",
                hint,
                prompt,
                &notify(progress),
            )
            .await?;
        let mut next = vault.clone();
        replace_enrolment(&mut next, used);
        next.seal(&dek, name, kind, credential_json.expose().as_bytes())
            .map_err(vault_error)?;
        next.save(&self.paths.vault).map_err(vault_error)?;
        *vault = next;
        tracing::info!(%caller, credential = name, kind, "sealed an upstream credential");
        self.record(Record {
            time: self.clock.unix_now(),
            event: "imported".into(),
            caller: Some(caller.into()),
            credential: Some(name.to_owned()),
            touch: Some(evidence),
            ..Default::default()
        })
        .await?;
        Ok(kind)
    }

    /// Touch, verify, unlock and open the sealed credential `credential`.
    pub(crate) async fn approve_and_unseal(
        &self,
        credential: &str,
        approved: &Approved,
        hint: &CallerHint,
        require_uv: bool,
        prompt: String,
        notify: &Waiters,
    ) -> Result<(UpstreamCredential, TouchEvidence, CounterSave), AgentError> {
        let mut vault = self.vault.clone().lock_owned().await;
        let first = vault.enrolment().cloned().ok_or_else(not_enrolled)?;
        if require_uv && !first.uv {
            return Err(AgentError::new(
                ErrorCode::Config,
                "this profile requires user verification, but the keys were enrolled without it: run touchgate enroll --force --uv (then import again)",
            ));
        }
        if !vault.entry_names().iter().any(|n| n == credential) {
            return Err(AgentError::new(
                ErrorCode::UnknownCredential,
                format!("no credential named \"{credential}\" is sealed: run touchgate import FILE --name {credential}"),
            ));
        }
        let (dek, used, evidence) = self
            .assert_and_unlock(&mut vault, approved, "get-token", hint, prompt, notify)
            .await?;
        let (_kind, plaintext) = vault.open(&dek, credential).map_err(vault_error)?;
        drop(dek);
        let text = std::str::from_utf8(&plaintext).map_err(|_| {
            AgentError::new(
                ErrorCode::Vault,
                format!("sealed credential \"{credential}\" is not text: import it again"),
            )
        })?;
        let cred = UpstreamCredential::parse_sealed(text)
            .map_err(|e| AgentError::new(ErrorCode::BadCredential, e.to_string()))?;
        // The counter is saved only once everything checked out: appended to
        // the counters file off the runtime, under the vault's lock until the
        // file holds it (the vault file is not rewritten for a touch).
        let (id, count) = (used.credential_id.clone(), used.sign_count);
        let mut next = vault.clone();
        replace_enrolment(&mut next, used);
        let counters = self.counters.clone();
        let saved = tokio::task::spawn_blocking(move || {
            counters
                .locked()
                .record(&id, count, &next)
                .map_err(vault_error)?;
            *vault = next;
            Ok(())
        });
        Ok((cred, evidence, CounterSave(saved)))
    }

    /// One getAssertion, answerable by any trusted enrolled key, with the vault
    /// salt, over a challenge bound to the audit head and `approved` (the caller
    /// must write exactly that into the touch's record): verify it, then unlock the data key (creating the key's slot on
    /// first use). Returns the key and the answering key's enrolment with its
    /// new counter; the caller saves. A counter that went back marks the key
    /// suspect (saved at once) and refuses.
    async fn assert_and_unlock(
        &self,
        vault: &mut VaultFile,
        approved: &Approved,
        purpose: &str,
        hint: &CallerHint,
        prompt: String,
        notify: &Waiters,
    ) -> Result<(Dek, Enrolment, TouchEvidence), AgentError> {
        let first = vault.enrolment().cloned().ok_or_else(not_enrolled)?;
        let allow: Vec<Vec<u8>> = vault
            .enrolments
            .iter()
            .filter(|e| e.suspect.is_none())
            .map(|e| e.credential_id.clone())
            .collect();
        if allow.is_empty() {
            return Err(AgentError::new(
                ErrorCode::KeyVerification,
                format!(
                    "every enrolled key is marked suspect (a possible clone), so none can approve anything: if you are sure the keys are yours, stop the agent, move {} aside, enrol again and import your credentials again",
                    self.paths.vault.display()
                ),
            ));
        }
        // The touch signs the history so far (the head) and what its record will say.
        let inputs = ChallengeInputs::bound(purpose, self.audit.head(), self.clock.unix_now());
        let challenge = inputs.challenge_for(approved);
        let cdh = crate::fido::key::client_data_hash(&challenge);
        let (salt, uv) = (first.hmac_salt, first.uv);
        let op: KeyOp<Assertion> = Arc::new(move |k, pin| {
            k.get_assertion(&GetAssertionRequest {
                rp_id: RP_ID.into(),
                challenge,
                allow: allow.clone(),
                hmac_salt: Some(salt),
                uv,
                pin,
                up: true,
            })
        });
        let assertion = self.key_op(hint, &prompt, notify, op).await?;
        self.touches.fetch_add(1, Ordering::Relaxed);
        let mut enrolment = vault
            .enrolment_for(&assertion.credential_id)
            .cloned()
            .ok_or_else(|| {
                AgentError::new(
                    ErrorCode::KeyVerification,
                    "the security key answered with a credential that is not enrolled: refused",
                )
            })?;
        // Left off the allow-list, yet it answered: a key that does that is not to be believed.
        if let Some(why) = &enrolment.suspect {
            let short = short_id(&enrolment.credential_id);
            tracing::error!(alert = "suspect-key-answered", credential = %short, key = %enrolment.key_name, "ALERT: a key marked suspect answered although it was not asked: refused");
            return Err(AgentError::new(
                ErrorCode::KeyVerification,
                format!(
                    "the security key answered with credential {short}, which is marked suspect ({why}): refused; see touchgate keys list"
                ),
            ));
        }
        let verified = match verify::verify_assertion(&expected(&enrolment), &cdh, &assertion) {
            Ok(v) => v,
            Err(e @ VerifyError::CounterNotIncreased { .. }) => {
                let short = short_id(&enrolment.credential_id);
                tracing::error!(alert = "possible-cloned-key", credential = %short, key = %enrolment.key_name, "ALERT: {e}");
                let mut next = vault.clone();
                next.enrolment_for_mut(&enrolment.credential_id)
                    .expect("enrolled")
                    .suspect = Some(e.to_string());
                next.save(&self.paths.vault).map_err(vault_error)?;
                *vault = next;
                return Err(AgentError::new(
                    ErrorCode::KeyVerification,
                    format!("{e}; key {short} is now marked suspect and refused until you run touchgate keys trust {short}"),
                ));
            }
            Err(e) => {
                tracing::warn!("security key answer refused: {e}");
                return Err(AgentError::new(ErrorCode::KeyVerification, e.to_string()));
            }
        };
        enrolment.sign_count = verified.sign_count;
        let hmac = hmac_output(&assertion)?;
        let dek = match vault.unlock(&enrolment.credential_id, &hmac) {
            Ok(d) => d,
            Err(crate::vault::VaultError::NoSlot) if vault.slots.is_empty() => vault
                .create_slot(&enrolment.credential_id, &hmac)
                .map_err(vault_error)?,
            Err(e) => return Err(vault_error(e)),
        };
        Ok((dek, enrolment, TouchEvidence::new(&assertion, inputs)))
    }
}

/// The answering key's new counter on its way into the counters file
/// ([`crate::vault::counters`]), written on a blocking thread while the
/// caller mints: nothing may be handed out before [`CounterSave::done`]. The
/// vault stays locked until the file holds the counter, also when the
/// issuance is abandoned meanwhile, and the agent's copy of the vault moves
/// only once it does.
#[must_use = "a token may be handed out only once its touch's counter is saved"]
pub(crate) struct CounterSave(tokio::task::JoinHandle<Result<(), AgentError>>);

impl CounterSave {
    /// Wait until the vault file holds the counter; its error if it could not.
    pub(crate) async fn done(self) -> Result<(), AgentError> {
        self.0.await.map_err(|e| {
            AgentError::new(
                ErrorCode::Vault,
                format!("the vault write was stopped before it finished: {e}"),
            )
        })?
    }
}

/// Put `e` (a newer copy of an enrolled key's record) in place of the old one.
fn replace_enrolment(vault: &mut VaultFile, e: Enrolment) {
    if let Some(slot) = vault.enrolment_for_mut(&e.credential_id) {
        *slot = e;
    }
}

fn expected(e: &Enrolment) -> Expected<'_> {
    Expected {
        rp_id: RP_ID,
        credential_id: &e.credential_id,
        public_key_sec1: &e.public_key_sec1,
        stored_sign_count: e.sign_count,
        require_uv: e.uv,
    }
}

fn hmac_output(a: &Assertion) -> Result<Zeroizing<[u8; 32]>, AgentError> {
    let h = a.hmac_secret.as_ref().ok_or_else(|| {
        AgentError::new(
            ErrorCode::Key,
            "the security key returned no hmac-secret output: it cannot unseal the vault",
        )
    })?;
    Ok(Zeroizing::new(**h))
}

pub(crate) fn key_info(e: &Enrolment) -> KeyInfo {
    KeyInfo {
        credential: short_id(&e.credential_id),
        key_name: e.key_name.clone(),
        aaguid: format_aaguid(&e.aaguid),
        sign_count: e.sign_count,
        created_at: e.created_at,
        uv: e.uv,
        attestation: if e.attestation_cert.is_empty() {
            e.attestation_format.clone()
        } else {
            format!("{} with certificate", e.attestation_format)
        },
        suspect: e.suspect.clone(),
    }
}

/// The one enrolled key whose credential id starts with `prefix` (hex).
fn find_key(vault: &VaultFile, prefix: &str) -> Result<Vec<u8>, AgentError> {
    let p = prefix.trim().to_ascii_lowercase();
    let matches: Vec<&Enrolment> = vault
        .enrolments
        .iter()
        .filter(|e| !p.is_empty() && hex::encode(&e.credential_id).starts_with(&p))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.credential_id.clone()),
        [] => Err(AgentError::new(
            ErrorCode::Key,
            format!(
                "no enrolled key has a credential id starting with {}: see touchgate keys list",
                touchgate::quote(prefix)
            ),
        )),
        _ => Err(AgentError::new(
            ErrorCode::Key,
            format!(
                "{} matches several enrolled keys: give more of the credential id",
                touchgate::quote(prefix)
            ),
        )),
    }
}

fn valid_name(name: &str) -> Result<(), AgentError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(AgentError::new(
            ErrorCode::BadCredential,
            format!(
                "credential name {} is not allowed: use up to 64 letters, digits, '-', '_' or '.'",
                touchgate::quote(name)
            ),
        ))
    }
}
