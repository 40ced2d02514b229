//! Spam phrases in the subject or body, many languages, one automaton for all.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::text::clip;
use super::{Analysis, Hit};

/// Phrases in the subject or body (lower-cased), one tag and score each. ASCII word
/// boundaries (`(?-u:\b)`) keep the set on the fast DFA; patterns that end in a non-ASCII
/// letter have none there.
const PHRASES: &[(&str, f32, &str)] = &[
    (
        "NOT_SPAM_CLAIM",
        3.0,
        r"this (?:is not|isn'?t) (?:a )?spam|not (?:an? )?unsolicited|(?:bill|s\.) ?1618|section 301|(?:sent|mailed) in compliance with|this (?:e-?mail|message) is not spam",
    ),
    (
        "REMOVE_INSTRUCTIONS",
        2.0,
        r#"to be removed from (?:our|this|any|the|future)|"remove" in the subject|remove in the subject|subject (?:line )?(?:of |as )?"?remove|click here to (?:be )?remove|removal instructions|(?:to|wish to|like to) be removed,? (?:please |simply )?(?:click|reply|send|e-?mail)|to opt[- ]out"#,
    ),
    (
        "OPT_IN_CLAIM",
        1.0,
        // Not "you are receiving this because you subscribed": every newsletter says so.
        r"opt-?in (?:list|e-?mail|database)|one[- ]time (?:mailing|e-?mail|offer)|(?:not|never) receive (?:another|any further|further) (?:e-?mail|message|mailing|offer)",
    ),
    (
        "GUARANTEE",
        1.5,
        r"100% (?:guaranteed|free|satisfaction|natural|legal|risk)|money[- ]back guarantee|risk[- ]free|(?-u:\b)no risk(?-u:\b)|satisfaction guaranteed|guaranteed (?:approval|results|income)",
    ),
    (
        "ACT_NOW",
        1.5,
        r"(?-u:\b)act now(?-u:\b)|order (?:now|today)(?-u:\b)|call (?:now|today|toll[- ]free)|limited[- ]time (?:offer|only)|offer expires|don'?t (?:delay|miss out)|while supplies last|once in a lifetime|(?:respond|reply) (?:now|today|immediately)",
    ),
    (
        "EARN_MONEY",
        1.5,
        r"(?:make|earn|making|earning) (?:\$|money (?:fast|online|from home|at home|while)|cash|extra (?:money|cash|income)|up to \$)|work(?:ing)? (?:from|at) home|home[- ]based business|financial freedom|be your own boss|double your (?:income|money)|(?:extra|residual|additional) income|income opportunity|get paid (?:to|for)|multi-?level marketing|(?-u:\b)mlm(?-u:\b)",
    ),
    (
        "PHARMA_ADULT",
        2.0,
        r"(?-u:\b)(?:viagra|cialis|levitra|phentermine|xanax|valium|vicodin|penis|erection|hgh|horny)(?-u:\b)|online pharmacy|no prescription|(?:penis|breast) (?:enhancement|enlargement)|lose (?:up to )?[0-9]+ ?(?:lbs|pounds|kg)|weight loss|diet pill|human growth hormone|adult (?:site|entertainment|video)|xxx (?:pics|movies|videos|sites?)|barely legal",
    ),
    (
        "FINANCE_OFFER",
        1.5,
        r"refinanc|mortgage rates?|lowest (?:rates?|prices?)|credit (?:repair|card debt)|debt consolidation|consolidate your (?:debt|bills)|bad credit|pre-?approved|low interest|cash advance|payday loan|(?:get|receive) (?:a )?(?:free )?quote",
    ),
    (
        "ADVANCE_FEE",
        2.0,
        r"next of kin|(?:transfer|remit|release) (?:of )?(?:the |this |these )?(?:sum|funds?) |(?:us\$|usd) ?[0-9][0-9,.]* ?(?:million|m(?-u:\b))|[0-9](?:[.,][0-9]+)? million (?:united states |u\.s\. |us )?dollars|strictly confidential|barrister|foreign (?:partner|account)|central bank of|diplomatic (?:courier|bag)|(?-u:\b)fund(?-u:\b)s? (?:transfer|release)",
    ),
    (
        "LOTTERY",
        2.0,
        r"you(?: have)? won (?:a |an |the |our |\$|[0-9])|you have been (?:selected|chosen)|winning (?:notification|number)|claim (?:your|the) (?:prize|reward|winnings|award)|congratulations!?,? you(?: have|'ve| are| were)? (?:won|a winner|been selected)|lottery|sweepstake",
    ),
    (
        "CLICK_HERE",
        1.0,
        r"click here|click below|click on the link below",
    ),
    (
        "DEAR_FRIEND",
        1.0,
        r"dear (?:friend|sir/madam|sir or madam|valued (?:customer|member)|account holder|winner|beloved)",
    ),
    (
        "FREE_OFFER",
        1.0,
        r"free (?:gift|offer|quote|consultation|membership|sample|info(?:rmation)?|money|cash|access|report|vacation)|absolutely free|(?:it'?s|100%) free(?-u:\b)",
    ),
    (
        "BULK_MAIL",
        1.5,
        r"(?:million|thousands of) (?:e-?mail )?addresses|(?:e-?mail|address) (?:list|database)s? (?:for sale|of)|targeted (?:e-?mail|mailing) list|mass (?:e-?mail|mailing)|bulk (?:e-?mail|mailer) (?:software|service)",
    ),
    (
        "TOLL_FREE_NUMBER",
        1.0,
        r"toll[- ]free|(?-u:\b)1[-. ]8[0-9]{2}[-. ][0-9]{3}[-. ]?[0-9]{4}",
    ),
    (
        "PHISHING",
        2.0,
        r"verify your (?:account|identity|information|password|login)|your (?:account|password) (?:has been|will be) (?:suspended|locked|limited|closed|disabled)|confirm your (?:account|billing|identity)|update your (?:billing|payment|account) (?:information|details)|unusual (?:sign-?in )?activity",
    ),
    (
        "MULTILINGUAL_SPAM",
        1.5,
        concat!(
            // German
            r"sie haben gewonnen|gewinnbenachrichtigung|geld verdienen|von zu hause (?:aus )?arbeiten|ihr konto (?:wurde|wird) (?:gesperrt|eingeschränkt)|bestätigen sie ihr(?:e)? (?:konto|identität|daten)|nur für kurze zeit|potenzmittel|",
            // French
            r"vous avez gagné|gagnez de l'argent|argent facile|travail(?:ler)? à domicile|offre (?:exclusive|limitée) |100% gratuit|votre compte (?:a été|sera) (?:suspendu|bloqué)|vérifiez votre (?:compte|identité)|perdre du poids|",
            // Spanish
            r"(?:usted )?ha ganado|has ganado|gane dinero|dinero fácil|trabaj(?:e|ar) desde casa|oferta (?:exclusiva|limitada) |100% gratis|su cuenta (?:ha sido|será) (?:suspendida|bloqueada)|verifique su (?:cuenta|identidad)|",
            // Portuguese
            r"você ganhou|voce ganhou|ganhe dinheiro|dinheiro fácil|trabalh(?:e|ar) em casa|100% grátis|sua conta (?:foi|será) (?:suspensa|bloqueada)|verifique sua (?:conta|identidade)"
        ),
    ),
];

static PHRASE_SET: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new(PHRASES.iter().map(|(_, _, p)| *p)).expect("built-in phrases compile")
});

/// The same phrases one by one, to quote what matched (only run for the ones the set found).
static PHRASE_REGEXES: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    PHRASES
        .iter()
        .map(|(_, _, p)| Regex::new(p).expect("built-in phrase compiles"))
        .collect()
});

pub(super) fn check(a: &Analysis, hits: &mut Vec<Hit>) {
    for i in PHRASE_SET.matches(&a.lower).iter() {
        let (tag, score, _) = PHRASES[i];
        let quote = PHRASE_REGEXES[i]
            .find(&a.lower)
            .map(|m| clip(m.as_str(), 60))
            .unwrap_or_default();
        hits.push((tag, score, format!("spam phrase {quote:?}")));
    }
}
