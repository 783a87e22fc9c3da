//! Who may have a token for a profile, and whose window a touch opens.
//!
//! [`decide`] is the one place the rules live: the agent calls it for every
//! GetToken, and `touchgate-agent policy check` prints its answer, so the two
//! cannot disagree. Both describe the asking program as a [`Subject`]: its
//! executable and, behind an interpreter, its script; a `callers` glob
//! matches either.

pub mod subject;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use touchgate::kube::KubeCluster;

use crate::config::{format_duration, Per, Profile, TouchRule, UserVerification};
use subject::Subject;

/// The outcome of the caller and scope rules for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Allowed, on the terms of the grant.
    Allow(Grant<'a>),
    /// Refused, with the rule that refused and a one-line reason with the fix.
    Refuse { rule: String, reason: String },
}

/// What an allowed request gets: every answer the profile's rules give, so
/// the service reads them here rather than from the profile. Borrowed from
/// the request and the config, so deciding a window hit allocates nothing
/// (a `per = "caller"` window names its program, which is text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant<'a> {
    /// The approval window this request uses or opens.
    pub window: WindowKey<'a>,
    /// The touch, verification and limits it is issued under.
    pub terms: Terms,
    allowed_by: AllowedBy,
}

/// The terms a token is issued under: the touch rule, user verification and
/// limits, as the profile's rules give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// Whether a touch opens a window, and for how long.
    pub touch: TouchRule,
    /// Whether the key must verify the user (PIN or biometrics) for the touch.
    pub user_verification: UserVerification,
    /// The most tokens one window hands out, if limited.
    pub max_tokens: Option<u32>,
    /// How long each token lives.
    pub lifetime: Duration,
    /// For a kubectl window: how long the touched token is handed again.
    pub kubectl_window: Option<Duration>,
}

/// Which setting allowed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllowedBy {
    AnyProgram,
    Callers,
    PerCaller,
}

impl Grant<'_> {
    /// The setting that allowed the request, as `policy check` names it.
    pub fn rule(&self) -> String {
        let name = self.window.profile();
        match self.allowed_by {
            AllowedBy::AnyProgram => format!("profiles.{name}: any program of this user"),
            AllowedBy::Callers => format!("profiles.{name}.callers"),
            AllowedBy::PerCaller => format!("profiles.{name}: per = \"caller\""),
        }
    }
}

/// Whose approval window a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WindowKey<'a> {
    /// The profile's one window, whoever asks (`per = "profile"`).
    Profile(&'a str),
    /// One window per program (`per = "caller"`): the program as [`Subject`] shows it.
    Caller { profile: &'a str, who: String },
    /// A kubectl window (`kubectl_window`): one kubectl executable sending the
    /// token to one cluster entry (its [`KubeCluster::digest`]).
    Kubectl {
        profile: &'a str,
        kubectl: String,
        server: String,
        cluster: String,
    },
}

impl<'a> WindowKey<'a> {
    /// The profile the window belongs to.
    pub fn profile(&self) -> &'a str {
        match self {
            WindowKey::Profile(p)
            | WindowKey::Caller { profile: p, .. }
            | WindowKey::Kubectl { profile: p, .. } => p,
        }
    }

    /// The window's key in the agent's maps: unique per window, and borrowed
    /// for a profile's window. Not for people (see `Display`).
    pub(crate) fn text(&self) -> Cow<'a, str> {
        match self {
            WindowKey::Profile(p) => Cow::Borrowed(p),
            WindowKey::Caller { profile, who } => Cow::Owned(format!("{profile}\u{0}{who}")),
            WindowKey::Kubectl {
                profile,
                kubectl,
                cluster,
                ..
            } => Cow::Owned(format!("{profile}\u{0}kubectl\u{0}{kubectl}\u{0}{cluster}")),
        }
    }
}

impl std::fmt::Display for WindowKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowKey::Profile(p) => f.write_str(p),
            WindowKey::Caller { profile, who } => write!(f, "{profile} for {who}"),
            WindowKey::Kubectl {
                profile,
                kubectl,
                server,
                ..
            } => write!(f, "{profile} for {kubectl} at {server}"),
        }
    }
}

/// Apply profile `name`'s rules to a request from program `who` for `scopes`.
pub fn decide<'a>(
    name: &'a str,
    profile: &Profile,
    who: &Subject,
    scopes: &[String],
) -> Decision<'a> {
    if !profile.callers.is_empty() {
        let matched = who.paths().any(|p| {
            let p = p.display().to_string();
            profile.callers.iter().any(|g| glob_match(g, &p))
        });
        if !matched {
            let fix = match who.suggestion() {
                Some(s) => format!("add \"{s}\" to profiles.{name}.callers if it should"),
                None => "add its path there if it should".to_owned(),
            };
            return Decision::Refuse {
                rule: format!("profiles.{name}.callers"),
                reason: format!(
                    "{who} may not use profile \"{name}\": it is not in profiles.{name}.callers ({}); {fix}",
                    profile.callers.join(", ")
                ),
            };
        }
    }
    let (field, ceiling) = scope_ceiling(profile);
    if let Some(bad) = scopes.iter().find(|s| !ceiling.contains(s)) {
        return Decision::Refuse {
            rule: format!("profiles.{name}.{field}"),
            reason: format!(
                "scope {} is outside profile \"{name}\"'s scopes ({}): ask for some of those (or none, for all of them), or widen profiles.{name}.{field}",
                touchgate::quote(bad),
                ceiling.join(", ")
            ),
        };
    }
    let (allowed_by, window) = match profile.per {
        Per::Profile if profile.callers.is_empty() => {
            (AllowedBy::AnyProgram, WindowKey::Profile(name))
        }
        Per::Profile => (AllowedBy::Callers, WindowKey::Profile(name)),
        Per::Caller => (
            AllowedBy::PerCaller,
            WindowKey::Caller {
                profile: name,
                who: who.to_string(),
            },
        ),
    };
    Decision::Allow(Grant {
        window,
        terms: Terms {
            touch: profile.touch,
            user_verification: profile.user_verification,
            max_tokens: profile.max_tokens_per_window,
            lifetime: profile.lifetime,
            kubectl_window: None,
        },
        allowed_by,
    })
}

/// The grant of a request from the kubectl plugin: with an `every-token`
/// profile that sets `kubectl_window`, a plugin that `kubectl` (as the kernel
/// names the plugin's parent) started, and a cluster that may have a window
/// ([`KubeCluster`]), the touched token is kept for that kubectl and cluster
/// for `kubectl_window` (never past the token's own end). Any other request
/// keeps `grant` as [`decide`] made it. A window profile needs none of this:
/// kubectl shares its window like any program.
pub fn kubectl_grant<'a>(
    mut grant: Grant<'a>,
    profile: &Profile,
    kubectl: Option<&Path>,
    cluster: Option<&KubeCluster>,
) -> Grant<'a> {
    let (Some(length), TouchRule::EveryToken, Some(kubectl), Some(cluster)) =
        (profile.kubectl_window, profile.touch, kubectl, cluster)
    else {
        return grant;
    };
    grant.window = WindowKey::Kubectl {
        profile: grant.window.profile(),
        kubectl: kubectl.display().to_string(),
        server: cluster.server.clone(),
        cluster: cluster.digest.clone(),
    };
    grant.terms.kubectl_window = Some(length);
    grant
}

/// Whether [`decide`] looks at who asks for `profile` (its `callers` or `per =
/// "caller"`); when not, the caller need not be looked up at all.
pub fn looks_at_caller(profile: &Profile) -> bool {
    !profile.callers.is_empty() || profile.per == Per::Caller
}

/// The most a request for `profile` may ask for, and the setting that says so:
/// its `allowed_scopes` if set, else its `scopes`. A request for more is refused
/// (not narrowed), so nobody gets a narrower token than they believe they have.
pub fn scope_ceiling(profile: &Profile) -> (&'static str, &[String]) {
    if profile.allowed_scopes.is_empty() {
        ("scopes", &profile.scopes)
    } else {
        ("allowed_scopes", &profile.allowed_scopes)
    }
}

/// What one touch approves, as the touch prompt and the desktop notification
/// say it: the service account, scopes, token lifetime and window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub profile: String,
    pub service_account: Option<String>,
    pub scopes: Vec<String>,
    pub lifetime: Duration,
    pub touch: TouchRule,
    pub per: Per,
    /// An ID token for this audience, instead of an access token for the scopes.
    pub audience: Option<String>,
    /// A kubectl window this touch opens, as [`WindowKey`]'s Display says it, and its length.
    pub kubectl: Option<(String, Duration)>,
}

impl Approval {
    /// What a touch for `scopes` of profile `name` approves.
    pub fn new(name: &str, profile: &Profile, scopes: &[String]) -> Approval {
        Approval {
            profile: name.to_owned(),
            service_account: profile.service_account.clone(),
            scopes: scopes.to_vec(),
            lifetime: profile.lifetime,
            touch: profile.touch,
            per: profile.per,
            audience: None,
            kubectl: None,
        }
    }

    /// What a touch for an ID token for `audience` of profile `name` approves.
    pub fn id_token(name: &str, profile: &Profile, audience: &str) -> Approval {
        Approval {
            audience: Some(audience.to_owned()),
            ..Approval::new(name, profile, &[])
        }
    }
}

impl std::fmt::Display for Approval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scopes: Vec<&str> = self
            .scopes
            .iter()
            .map(|s| s.strip_prefix(SCOPE_PREFIX).unwrap_or(s))
            .collect();
        match &self.service_account {
            Some(sa) => write!(f, "service account {sa}")?,
            None => f.write_str("the sealed credential's own account")?,
        }
        match &self.audience {
            // Checked printable ASCII (touchgate::check_audience) before it gets here.
            Some(aud) => write!(f, ", an ID token for audience {aud}, ")?,
            None => write!(
                f,
                ", scopes {}, token lifetime {}, ",
                scopes.join(" "),
                format_duration(self.lifetime)
            )?,
        }
        match (self.touch, &self.kubectl) {
            (TouchRule::EveryToken, None) => f.write_str("this token only"),
            (TouchRule::EveryToken, Some((window, length))) => write!(
                f,
                "this token, kept for {window} for {} (no further touch for that kubectl and cluster until then)",
                format_duration(*length)
            ),
            (TouchRule::Window(w), _) => write!(
                f,
                "opens a {} window (no further touch for {} until it closes)",
                format_duration(w),
                match self.per {
                    Per::Profile => "this profile",
                    Per::Caller => "this program and profile",
                }
            ),
        }
    }
}

/// Google's scope URLs all start with this; prompts show the rest.
const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";

/// Shell-style glob: `*` any run of characters (also `/`), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        // `*` first: a `*` in the text must not use up the pattern's `*` as a literal.
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(path: &str) -> Subject {
        Subject {
            exe: Some(path.into()),
            script: None,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("/usr/bin/*", "/usr/bin/gcloud"));
        assert!(glob_match("*/python3*", "/opt/venv/bin/python3.11"));
        assert!(glob_match("/usr/bin/gclou?", "/usr/bin/gcloud"));
        assert!(!glob_match("/usr/bin/gcloud", "/usr/bin/gcloud2"));
        assert!(!glob_match("/opt/*/python3", "/usr/bin/python3"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn a_star_in_the_text_does_not_use_up_a_star_of_the_pattern() {
        // Found by the `glob` fuzz target: `*` was matched as a literal against a `*`.
        assert!(glob_match("*", "*a"));
        assert!(glob_match("/opt/*/bin", "/opt/*x/bin"));
        assert!(glob_match("a*b", "a*cb"));
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        // Exponential backtracking would never finish these; the matcher is linear per star.
        let pattern = "*a".repeat(30) + "*b";
        let text = "a".repeat(10_000);
        assert!(!glob_match(&pattern, &text));
        assert!(glob_match(&pattern, &(text + "b")));
    }

    fn profile(callers: &[&str], per: Per, scopes: &[&str]) -> Profile {
        Profile {
            callers: callers.iter().map(|s| s.to_string()).collect(),
            per,
            allowed_scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Profile::default()
        }
    }

    #[test]
    fn callers_outside_the_list_are_refused_with_the_rule() {
        let p = profile(&["/usr/bin/gcloud"], Per::Profile, &[]);
        assert!(matches!(
            decide("train", &p, &exe("/usr/bin/gcloud"), &[]),
            Decision::Allow(_)
        ));
        match decide("train", &p, &exe("/usr/bin/python3"), &[]) {
            Decision::Refuse { rule, reason } => {
                assert_eq!(rule, "profiles.train.callers");
                assert!(
                    reason.contains("/usr/bin/python3 may not use profile \"train\"")
                        && reason.ends_with(
                            "add \"/usr/bin/python3\" to profiles.train.callers if it should"
                        ),
                    "{reason}"
                );
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decide("train", &p, &Subject::default(), &[]),
            Decision::Refuse { .. }
        ));
    }

    #[test]
    fn a_glob_matches_the_executable_or_the_script() {
        let gcloud = Subject {
            exe: Some("/usr/lib/google-cloud-sdk/platform/bundledpythonunix/bin/python3".into()),
            script: Some("/usr/lib/google-cloud-sdk/lib/gcloud.py".into()),
        };
        let by_script = profile(&["*/google-cloud-sdk/lib/gcloud.py"], Per::Profile, &[]);
        assert!(matches!(
            decide("p", &by_script, &gcloud, &[]),
            Decision::Allow(_)
        ));
        let by_interpreter = profile(&["*/bundledpythonunix/bin/python3"], Per::Profile, &[]);
        assert!(matches!(
            decide("p", &by_interpreter, &gcloud, &[]),
            Decision::Allow(_)
        ));
        // The launcher's path is neither: the refusal names both and what to write.
        let by_launcher = profile(&["/usr/bin/gcloud"], Per::Profile, &[]);
        match decide("p", &by_launcher, &gcloud, &[]) {
            Decision::Refuse { reason, .. } => assert_eq!(
                reason,
                "/usr/lib/google-cloud-sdk/platform/bundledpythonunix/bin/python3 running /usr/lib/google-cloud-sdk/lib/gcloud.py \
                 may not use profile \"p\": it is not in profiles.p.callers (/usr/bin/gcloud); \
                 add \"*/google-cloud-sdk/lib/gcloud.py\" to profiles.p.callers if it should"
            ),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn per_caller_windows_differ_by_program() {
        let p = profile(&[], Per::Caller, &[]);
        let w = |path: &str| match decide("inf", &p, &exe(path), &[]) {
            Decision::Allow(g) => g.window.text().into_owned(),
            d => panic!("{d:?}"),
        };
        assert_ne!(w("/usr/bin/gcloud"), w("/usr/bin/python3"));
        assert_eq!(w("/usr/bin/gcloud"), w("/usr/bin/gcloud"));
        // One interpreter, two scripts: two programs, two windows.
        let run = |script: &str| Subject {
            exe: Some("/usr/bin/python3".into()),
            script: Some(script.into()),
        };
        let w2 = |s: &Subject| match decide("inf", &p, s, &[]) {
            Decision::Allow(g) => g.window.text().into_owned(),
            d => panic!("{d:?}"),
        };
        assert_ne!(w2(&run("/a/gcloud.py")), w2(&run("/a/train.py")));
        assert_ne!(w2(&run("/a/gcloud.py")), w("/usr/bin/python3"));
        let shared = profile(&[], Per::Profile, &[]);
        assert!(
            matches!(decide("inf", &shared, &exe("/x"), &[]), Decision::Allow(g) if g.window == WindowKey::Profile("inf"))
        );
    }

    #[test]
    fn a_kubectl_window_only_for_every_token_profiles_that_ask_kubectl_and_a_cluster() {
        let cluster = KubeCluster {
            server: "https://203.0.113.7".into(),
            digest: "d1".into(),
        };
        let kubectl = Path::new("/usr/bin/kubectl");
        let every = Profile {
            kubectl_window: Some(Duration::from_secs(300)),
            ..Profile::default()
        };
        let grant = |p: &Profile, k: Option<&Path>, c: Option<&KubeCluster>| match decide(
            "deploy",
            p,
            &Subject::default(),
            &[],
        ) {
            Decision::Allow(g) => kubectl_grant(g, p, k, c),
            d => panic!("{d:?}"),
        };
        let g = grant(&every, Some(kubectl), Some(&cluster));
        assert_eq!(g.terms.kubectl_window, Some(Duration::from_secs(300)));
        assert_eq!(g.terms.touch, TouchRule::EveryToken);
        assert_eq!(
            g.window.to_string(),
            "deploy for /usr/bin/kubectl at https://203.0.113.7"
        );
        // Another kubectl, another cluster entry: other windows.
        let other = KubeCluster {
            digest: "d2".into(),
            ..cluster.clone()
        };
        assert_ne!(
            grant(&every, Some(kubectl), Some(&other)).window.text(),
            g.window.text()
        );
        assert_ne!(
            grant(
                &every,
                Some(Path::new("/home/u/bin/kubectl")),
                Some(&cluster)
            )
            .window
            .text(),
            g.window.text()
        );
        // Not kubectl, no cluster, no kubectl_window, a window profile: no kubectl window.
        let plain =
            |g: Grant| g.terms.kubectl_window.is_none() && g.window == WindowKey::Profile("deploy");
        assert!(plain(grant(&every, None, Some(&cluster))));
        assert!(plain(grant(&every, Some(kubectl), None)));
        assert!(plain(grant(
            &Profile::default(),
            Some(kubectl),
            Some(&cluster)
        )));
        let windowed = Profile {
            touch: TouchRule::Window(Duration::from_secs(600)),
            ..every.clone()
        };
        assert!(plain(grant(&windowed, Some(kubectl), Some(&cluster))));
    }

    #[test]
    fn the_profile_scopes_are_a_ceiling() {
        let p = Profile {
            scopes: vec!["ro".into(), "email".into()],
            ..Profile::default()
        };
        for ok in [&[][..], &["ro".into()], &["email".into(), "ro".into()]] {
            assert!(
                matches!(
                    decide("narrow", &p, &Subject::default(), ok),
                    Decision::Allow(_)
                ),
                "{ok:?}"
            );
        }
        match decide(
            "narrow",
            &p,
            &Subject::default(),
            &["ro".into(), "wide\nscope".into()],
        ) {
            Decision::Refuse { rule, reason } => {
                assert_eq!(rule, "profiles.narrow.scopes");
                assert!(reason.contains("wide\\nscope"), "escaped: {reason}");
                assert!(reason.contains("(ro, email)"), "{reason}");
                assert!(!reason.contains('\n'), "{reason}");
            }
            d => panic!("a scope outside the profile's was allowed: {d:?}"),
        }
    }

    #[test]
    fn scopes_outside_allowed_scopes_are_refused() {
        let p = profile(&[], Per::Profile, &["s1", "s2"]);
        assert!(matches!(
            decide("p", &p, &Subject::default(), &["s1".into()]),
            Decision::Allow(_)
        ));
        assert!(
            matches!(decide("p", &p, &Subject::default(), &["s3".into()]), Decision::Refuse { rule, .. } if rule == "profiles.p.allowed_scopes")
        );
    }
}
