"""The offline detector's pattern data: what a disclosure sounds like, and what only looks like one.

Data, not logic: ``detect.py`` applies these tables. Every pattern runs on normalised
text (lower case, straight apostrophes, "im" -> "i'm", "gonna" -> "going to", ...), so
the tables spell each phrasing once. Severities follow C-SSRS-style screening:

    concern   passive wishes, hopelessness, coercion, one's own distant history
    risk      active thoughts, current acts, ongoing abuse
    imminent  a plan, means, a timeline or preparations; an emergency in progress
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Category = Literal["suicidal_ideation", "self_harm", "abuse_or_violence", "harm_to_others", "medical_emergency"]
Severity = Literal["concern", "risk", "imminent"]
CATEGORIES: tuple[Category, ...] = (
    "suicidal_ideation", "self_harm", "abuse_or_violence", "harm_to_others", "medical_emergency",
)
SEVERITIES: tuple[Severity, ...] = ("concern", "risk", "imminent")


@dataclass(frozen=True)
class Rule:
    category: Category
    severity: Severity
    pattern: re.Pattern[str]
    # The phrase does not name its subject ("thinking about suicide"): the clause must be
    # about the speaker, not "my friend has been thinking about suicide".
    needs_first_person: bool = False
    # A past act ("I tried to...", "he hit me"): a distance marker ("years ago") lowers it to concern.
    past_act: bool = False
    # Said as a joke often enough ("kill me", "want to die") that laughter lowers it to concern.
    hyperbole_prone: bool = False
    probe: re.Pattern[str] | None = None  # see ``probe_for``


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def probe_for(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """The pattern without its leading word boundary: looser, so a miss is a sure miss, and
    about three times faster (re can skip straight to the possible first characters)."""
    return re.compile(pattern.pattern[2:]) if pattern.pattern.startswith(r"\b") else pattern


def rule(category: Category, severity: Severity, pattern: str, **flags: bool) -> Rule:
    compiled = _rx(pattern)
    return Rule(category, severity, compiled, probe=probe_for(compiled), **flags)


# Shorthands shared by the tables below.
PERSON = (
    r"(?:he|she|they|my (?:\w+'s )?(?:husband|wife|partner|boyfriend|girlfriend|ex|dad|father|stepdad|mom|mum|mother|stepmom|"
    r"brother|sister|uncle|aunt|cousin|grandpa|grandfather|boss|coach|teacher|roommate|landlord|son|daughter|"
    r"fiance|fiancee|family|parents?))"
)
KIN = (
    r"(?:husband|wife|partner|boyfriend|girlfriend|ex|dad|father|stepdad|mom|mum|mother|stepmom|brother|sister|"
    r"uncle|aunt|cousin|grandpa|grandfather|boss|coach|teacher|roommate|landlord|neighbou?r)"
)
PEOPLE = (
    r"(?:kids?|guys?|people|girls?|boys?|man|men|woman|women|teachers?|boss|bull(?:y|ies)|neighbou?rs?|coworkers?|"
    r"classmates?|family|parents?|ex|husband|wife|boyfriend|girlfriend|roommates?|baby|child|children|son|daughter)"
)
HURT_VERBS = r"(?:hits?|hitting|beats?|beat|beating|chokes?|choked|choking|strangled?|kicks?|kicked|slaps?|slapped|punch(?:es|ed)?|shoves?|shoved|pushes|pushed|hurts|burns? me|throws? things at|threw things at|grabbed|grabs)"

RULES: tuple[Rule, ...] = (
    # -- suicidal ideation: direct ------------------------------------------------------------
    rule("suicidal_ideation", "risk", r"\bkill(?:ing)? myself\b", hyperbole_prone=True),
    rule("suicidal_ideation", "risk", r"\b(?:end|ending|take|taking) my (?:own )?life\b"),
    rule("suicidal_ideation", "risk", r"\b(?:want|wanna|wanted|going|planning|plan|ready|trying) to die\b", needs_first_person=True, hyperbole_prone=True),
    rule("suicidal_ideation", "risk", r"\bwish (?:i was|i were|to be) dead\b"),
    rule("suicidal_ideation", "risk", r"\bfeel(?:ing)? like (?:dying|ending it|killing myself|ending my life|i want to die)\b"),
    rule("suicidal_ideation", "risk", r"\bsuicide (?:is|feels like|seems like|looks like|is starting to feel like) (?:the|my) (?:only|best|last|easiest) (?:option|way|choice|answer|way out)\b"),
    rule("suicidal_ideation", "concern", r"\bnothing (?:left )?(?:to live for|for me (?:here|anymore|in this world))\b"),
    rule("suicidal_ideation", "risk", r"\bsuicidal\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:thinking|thought|thoughts|think) (?:about|of) (?:suicide|dying|not being alive|ending it|killing myself)\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:commit|committing) suicide\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\bbetter off dead\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:end|ending|ended) (?:it all|everything)\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:life|living|my life)(?:'s| is)? (?:isn't|is not|not|ain't|never) worth (?:living|it)\b"),
    rule("suicidal_ideation", "concern", r"\b(?:easier|better|happier|simpler|relieved|fine|favou?r|relief)\b.{0,30}\bif i (?:just )?(?:wasn't|weren't|was gone|were gone|disappeared|died|didn't exist|was dead|wasn't around|wasn't here|wasn't alive)\b"),
    # a method named against oneself, or looked up: planning (imminent)
    rule("suicidal_ideation", "imminent", r"\b(?:hang|hanging|drown|drowning|shoot|shooting|poison|poisoning|suffocate|suffocating|gas|gassing|electrocute|stab|stabbing) myself\b"),
    rule("suicidal_ideation", "imminent", r"\b(?<!bungee )jump(?:ing)? (?:off|from|in front of) (?:a|the|my|our) (?:\w+ )?(?:bridge|building|roof|cliff|balcony|train|car|bus|ledge|tower|overpass|parking garage)\b(?!.*\b(?:bungee|dive|diving|swim|lake|pool)\b)", needs_first_person=True),
    rule("suicidal_ideation", "imminent", r"\b(?:ways|how|methods?|the best way|easiest way|painless way) to (?:die|kill myself|end (?:it|my life)|commit suicide)\b"),
    rule("suicidal_ideation", "imminent", r"\b(?:want|going|planning|plan|ready|thinking about|decided|about) to (?:overdose|od|jump|hang myself|take (?:all )?(?:of )?(?:my|the) pills)\b", needs_first_person=True),
    rule("suicidal_ideation", "imminent", r"\bhow many (?:pills|tablets|sleeping pills|painkillers)\b.{0,30}\b(?:take|kill|enough|lethal|fatal)\b"),
    rule("suicidal_ideation", "imminent", r"\b(?:made sure|make sure|arranged|arranging|sorted out|sorting out)\b.{0,60}\b(?:when|after|once) i'm (?:gone|dead|not here)\b"),
    rule("suicidal_ideation", "risk", r"\b(?:want|going|need) to end it\b(?! with)", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:tried|attempted|try) to (?:kill myself|end my life|take my (?:own )?life)\b", past_act=True),
    rule("suicidal_ideation", "risk", r"\battempted suicide\b", needs_first_person=True, past_act=True),
    rule("suicidal_ideation", "risk", r"\bmy suicide (?:note|attempt|plan)\b"),
    rule("suicidal_ideation", "risk", r"\bdon't want to (?:be alive|live|exist)\b"),
    rule("suicidal_ideation", "risk", r"\b(?:no|nothing to|don't have a|don't have any) (?:reasons?|point) (?:for me )?(?:left )?(?:to|in) (?:keep )?(?:live|living|stay alive|staying alive|go on|going on|be alive|being alive|be here)\b"),
    # -- suicidal ideation: indirect ----------------------------------------------------------
    rule("suicidal_ideation", "risk", r"\b(?:everyone|everybody|they|people|my family|the world|my kids) (?:would|will|'d) (?:all )?be better off without me\b"),
    rule("suicidal_ideation", "concern", r"\b(?:don't|can't|do not|cannot) see (?:the|any) point (?:anymore|any more|in (?:anything|living|life|going on|trying|being here))\b"),
    rule("suicidal_ideation", "concern", r"\bwhat's the point (?:of|in) (?:living|life|being alive|going on|anything anymore)\b"),
    rule("suicidal_ideation", "concern", r"\b(?:don't|do not|never) want to wake up\b"),
    rule("suicidal_ideation", "concern", r"\b(?:go to sleep|fall asleep|sleep) and (?:never|not) wake up\b"),
    rule("suicidal_ideation", "concern", r"\bwish(?:ing|ed)? i(?: was| were| had|'d) never (?:been )?born\b"),
    rule("suicidal_ideation", "concern", r"\b(?:disappear(?:ed)?|vanish(?:ed)?|stop existing) (?:forever|for good|permanently)\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:stop|cease|not) (?:existing|to exist)\b", needs_first_person=True),
    rule("suicidal_ideation", "concern", r"\b(?:sleep|go to sleep) forever\b", needs_first_person=True),
    rule("suicidal_ideation", "risk", r"\b(?:looking at|thinking about|drawn to|keep going to|standing (?:at|on|near)|staring at|went to) (?:the )?(?:train tracks|tracks|railway|railway line|bridge|ledge|edge of the roof|cliff edge)\b", needs_first_person=True),
    rule("suicidal_ideation", "imminent", r"\b(?:tonight|today|tomorrow) is the (?:night|day)\b.*\b(?:done|goodbye|over|end|it)\b"),
    rule("suicidal_ideation", "concern", r"\bwish i could (?:just )?(?:disappear|vanish|stop existing|not exist)\b"),
    rule("suicidal_ideation", "concern", r"\b(?:i'm|i am|i feel like) (?:just )?(?:a|such a) burden (?:to|on) (?:everyone|everybody|my family|them|you|people)\b"),
    rule("suicidal_ideation", "concern", r"\b(?:can't|don't think i can|not sure i can|don't know if i can) (?:go on|keep going|do this|take (?:it|this|much more)|cope|keep doing this) (?:anymore|any more|like this|much longer|for much longer|for long)\b"),
    rule("suicidal_ideation", "concern", r"\b(?:tired|sick) of (?:being alive|living|existing|life)\b"),
    rule("suicidal_ideation", "concern", r"\b(?:nobody|no one|no-one) (?:would|will) (?:even )?(?:miss|notice|care) (?:me|if i (?:was|were|died|disappeared|was gone))\b"),
    rule("suicidal_ideation", "concern", r"\b(?:the only|there's no other|no) way out\b", needs_first_person=True),
    rule("suicidal_ideation", "concern", r"\b(?:won't|will not|wouldn't|don't think i'll|not going to) be (?:around|here|alive) (?:much longer|for long|anymore|next (?:week|month|year)|by (?:next|the end)|tomorrow|to see)\b"),
    rule("suicidal_ideation", "concern", r"\bdon't want to be here anymore\b"),
    rule("suicidal_ideation", "concern", r"\bnot sure i want to (?:live|be alive|keep going|be here)\b"),
    rule("suicidal_ideation", "concern", r"\bdone with (?:life|living|everything|it all)\b", needs_first_person=True),
    rule("suicidal_ideation", "concern", r"\bwon't be a (?:problem|burden) (?:for|to) (?:anyone|you|them) (?:much longer|for long|anymore)\b"),
    # preparations (C-SSRS preparatory behaviour): imminent
    rule("suicidal_ideation", "imminent", r"\bgiv(?:ing|en|e) (?:away )?(?:all )?(?:of )?my (?:things|stuff|belongings|possessions)(?: away)?\b(?!.*\b(?:charity|goodwill|donat|declutter|moving|move|thrift|yard sale)\w*)"),
    rule("suicidal_ideation", "imminent", r"\b(?:wrote|writing|written|left) (?:a |my )?(?:goodbye|farewell|suicide) (?:letters?|notes?|messages?)\b"),
    rule("suicidal_ideation", "imminent", r"\b(?:saving|stockpiling|hoarding|collecting|saved) (?:up )?(?:my )?(?:pills|meds|medication|sleeping pills|painkillers)\b"),
    rule("suicidal_ideation", "imminent", r"\b(?:this is|consider this) (?:my )?(?:last|final) (?:goodbye|message)\b"),
    rule("suicidal_ideation", "imminent", r"\b(?:i'm|i am) (?:standing )?on (?:the|a) (?:bridge|ledge|roof|edge) (?:and|right now|about to)\b"),
    rule("suicidal_ideation", "imminent", r"\b(?:have|got|bought|picked) (?:a |the )?(?:rope|gun|noose) (?:for|to)\b", needs_first_person=True),
    rule("suicidal_ideation", "imminent", r"\b(?:said|saying|say) (?:my |all my )?(?:last )?goodbyes?\b", needs_first_person=True),
    rule("suicidal_ideation", "imminent", r"\b(?:bought|got|have|tied|made) (?:a |the )?noose\b", needs_first_person=True),
    rule("suicidal_ideation", "imminent", r"\b(?:made|have) my peace\b.*\b(?:ready|tonight|goodbye)\b"),
    # -- self-harm ------------------------------------------------------------------------------
    rule("self_harm", "risk", r"\b(?:cut|cutting|burn|burned|burnt|burning|hurt|hurting|scratch|scratched|scratching|hit|hitting|harm|harming|punish|punishing|carved|carving|punch|punched|punching|slap|slapped|slapping|bite|biting|bit|starve|starving) myself\b", hyperbole_prone=False, past_act=True),
    rule("self_harm", "risk", r"\bself[- ]?harm(?:ing|ed)?\b", needs_first_person=True, past_act=True),
    rule("self_harm", "risk", r"\b(?:started|been|keep|back to|went back to) (?:cutting|burning|scratching)\b", needs_first_person=True),
    rule("self_harm", "concern", r"\burges? to (?:cut|hurt myself|self[- ]?harm|burn myself)\b", needs_first_person=True),
    rule("self_harm", "concern", r"\bwant(?:ed)? to (?:cut|hurt myself|harm myself|burn myself)\b", needs_first_person=True),
    rule("self_harm", "risk", r"\brelapsed\b.*\b(?:cut|cutting|self[- ]?harm|blade|razor)\b"),
    rule("self_harm", "concern", r"\bused to (?:cut|self[- ]?harm|hurt myself|burn myself)\b", needs_first_person=True, past_act=True),
    rule("self_harm", "risk", r"\b(?:scratch|pick|bite) (?:my skin |myself )?until (?:i|it) bleed", needs_first_person=True),
    rule("self_harm", "risk", r"\b(?:fresh|new|deep|open) (?:cuts|cut|scars|burns|wounds) on my\b"),
    rule("self_harm", "risk", r"\b(?:bang|banging|hit|hitting|slam|slamming|smash|smashing) my head (?:against|on|into)\b"),
    rule("self_harm", "concern", r"\b(?:hide|hiding|cover|covering) (?:up )?(?:my|the) (?:scars|cuts|marks|burns)\b"),
    rule("self_harm", "risk", r"\buntil (?:it|they|i|my \w+) (?:bleed|bleeds|bled|bruise|bruises|bruised)\b", needs_first_person=True),
    rule("self_harm", "risk", r"\b(?:hurt|hit|smash(?:ed)?|bang(?:ed)?|punch(?:ed)?|cut|burn(?:ed)?|slam(?:med)?|bit|bite) (?:my|myself)\b.{0,40}\b(?:on purpose|to feel (?:something|anything|pain|better)|to punish myself)\b"),
    rule("self_harm", "risk", r"\bi (?:cut|burned|burnt) (?:again|last night|today|yesterday|this morning|deep|too deep|my (?:arms?|wrists?|legs?|thighs?|skin|stomach))\b"),
    # -- abuse or violence: the speaker is being harmed -------------------------------------------
    rule("abuse_or_violence", "risk", rf"\b{PERSON} (?:always |still |sometimes |keeps? |has |had |just )?(?:{HURT_VERBS}) me\b", past_act=True),
    rule("abuse_or_violence", "risk", rf"\b{PERSON} (?:always |still |sometimes )?(?:hits|hit|beats|beat|hurts|hurt|chokes|choked) (?:me|my (?:kids|children|son|daughter|mom|mum))\b", past_act=True),
    rule("abuse_or_violence", "imminent", r"\b(?:threaten(?:s|ed|ing)?|said|says|swore|told me)\b.{0,30}\b(?:kill|hurt|shoot|stab) me\b"),
    rule("abuse_or_violence", "imminent", r"\b(?:kill|hurt) me if i (?:leave|tell|go|call|try)\b"),
    rule("abuse_or_violence", "risk", r"\b(?:was|been|got|being) (?:raped|sexually assaulted|molested|assaulted|abused|beaten)\b", needs_first_person=True, past_act=True),
    rule("abuse_or_violence", "risk", rf"\b{PERSON} (?:raped|molested|assaulted|abused|abuses|forced himself on|forced herself on) me\b", past_act=True),
    rule("abuse_or_violence", "risk", r"\b(?:forces?|forced|forcing|makes|made|pressures|pressured) me (?:to )?(?:have sex|do sexual|do things|touch)\b", past_act=True),
    rule("abuse_or_violence", "risk", rf"\b(?:{PERSON}|someone|somebody)\b.{{0,40}}\bthreaten(?:s|ed|ing)? me\b"),
    rule("abuse_or_violence", "risk", rf"\b(?:and|then|also|even) (?:{HURT_VERBS}|touches|touched|gropes|groped) me\b"),
    rule("abuse_or_violence", "risk", r"\b(?:comes|came|sneaks|sneaked|creeps|crept) into my (?:room|bed|bedroom)\b.*\b(?:touch|touches|touched|hurts?|at night)\b"),
    rule("abuse_or_violence", "risk", rf"\b{PERSON} (?:touches|touched) me (?:when|where|at night|and|in ways?)\b", past_act=True),
    rule("abuse_or_violence", "concern", rf"\b(?:scared|afraid|terrified|frightened) (?:of|to go home to|to be home with|to be alone with) my {KIN}\b"),
    rule("abuse_or_violence", "concern", r"\b(?:scared|afraid|terrified) to go (?:back )?home\b"),
    rule("abuse_or_violence", "concern", r"\b(?:won't|doesn't|will not|never) lets? me (?:leave (?:the|him|her|them|our|my)|see my (?:friends|family)|have (?:my own |any )?money|use my phone|have a phone|keep my (?:phone|money|paycheck))\b"),
    rule("abuse_or_violence", "concern", r"\b(?:scared|afraid|terrified) of what (?:he|she|they|my \w+) (?:will|might|would|'ll|is going to) do\b"),
    rule("abuse_or_violence", "concern", rf"\b{PERSON} (?:locks|locked) me (?:in|out)\b"),
    rule("abuse_or_violence", "concern", r"\b(?:keeps?|kept|won't stop|started) (?:touching|grabbing|groping|hitting|following|stalking) me\b"),
    rule("abuse_or_violence", "risk", r"\b(?:bruises|marks|black eye|split lip)\b.{0,40}\bfrom (?:him|her|them|my \w+)\b"),
    rule("abuse_or_violence", "risk", r"\b(?:domestic (?:violence|abuse)|abusive (?:relationship|marriage|home|husband|wife|partner|boyfriend|girlfriend|parents?|dad|mom|father|mother))\b", needs_first_person=True),
    rule("abuse_or_violence", "imminent", r"\b(?:he|she|they|my \w+)(?:'s| is| are|'re) (?:outside|banging on|breaking) (?:my|the) (?:door|house|window)\b"),
    # -- harm to others ------------------------------------------------------------------------
    rule("harm_to_others", "risk", rf"\b(?:want|going|planning|plan|about|ready|tempted) to (?:kill|hurt|stab|shoot|strangle|murder|beat up|beat|poison) (?:him|her|them|someone|somebody|people|everyone|my \w+|that \w+|this \w+|(?:the|those|these|all the) (?:\w+ )?{PEOPLE})\b", needs_first_person=True),
    rule("harm_to_others", "risk", r"\b(?:thoughts (?:of|about)|think(?:ing)? (?:of|about)|fantasi[sz]e (?:about)?|fantasi[sz]ing (?:about)?|imagine|imagining|picture|picturing|images of|urges? to) ?(?:hurting|killing|stabbing|shooting|drowning|smothering|poisoning|hurt|kill|stab|shoot|poison) (?:him|her|them|someone|people|my \w+|the baby|my baby|everyone)\b", needs_first_person=True),
    rule("harm_to_others", "imminent", r"\b(?:got|have|bought|grabbed|carrying|brought|took) (?:a|my|the|his|dad's|a loaded) (?:knife|gun|pistol|rifle|bat|weapon|hammer)\b.*\b(?:use it on|on (?:him|her|them)|for (?:him|her|them)|kill|hurt|stab|shoot)\b", needs_first_person=True),
    rule("harm_to_others", "imminent", r"\buse (?:it|the knife|the gun|my gun|my knife) on (?:him|her|them|my \w+|someone|people)\b", needs_first_person=True),
    rule("harm_to_others", "imminent", r"\bshoot up (?:the|my|a) (?:school|office|work|church|mall|class)\b"),
    rule("harm_to_others", "imminent", r"\b(?:bring|take|bringing|taking) (?:a |my )?(?:gun|knife|weapon|rifle) to (?:school|work|the office|class|his|her|their)\b"),
    rule("harm_to_others", "risk", r"\bmake (?:him|her|them|everyone) pay\b.*\b(?:hurt|blood|bleed|gun|knife|suffer|kill)\b"),
    rule("harm_to_others", "risk", r"\b(?:make|making) (?:him|her|them|everyone|people) (?:bleed|suffer)\b", needs_first_person=True),
    rule("harm_to_others", "risk", r"\b(?:he|she|they)(?:'ll| will| are going to| is going to) (?:bleed|die|suffer) for (?:what|this|that)\b"),
    # -- medical emergency ---------------------------------------------------------------------
    rule("medical_emergency", "imminent", r"\b(?:took|swallowed|taken|downed) (?:all|a bunch|a lot|(?:way |far |much )?too many|too much|(?:the|a|an) (?:whole|entire|full) (?:bottle|pack|box|packet|strip)|a handful|\d+) (?:of )?(?:my |the |those )?(?:pills|tablets|meds|medication|sleeping pills|painkillers|tylenol|paracetamol|ibuprofen)?\b", needs_first_person=True),
    rule("medical_emergency", "imminent", r"\b(?:overdosed|overdosing|od'd|odd) (?:on|and|just)\b", needs_first_person=True, past_act=True),
    rule("medical_emergency", "imminent", r"\b(?:i )?(?:just )?overdosed\b", needs_first_person=True, past_act=True),
    rule("medical_emergency", "imminent", r"\b(?:i'm|i think i'm|i might be) (?:overdosing|od'ing)\b"),
    rule("medical_emergency", "imminent", r"\b(?:can't|cannot|can barely) breathe\b", needs_first_person=True),
    rule("medical_emergency", "risk", r"\b(?:can't|cannot) catch my breath\b"),
    rule("medical_emergency", "imminent", r"\b(?:took|taken|injected|had) (?:double|triple|twice|too much|way too much|extra|a double dose of) (?:of )?(?:my )?(?:insulin|dose|medication|meds|pills|tablets)\b"),
    rule("medical_emergency", "imminent", r"\b(?:lips|face|fingers) (?:are |is )?(?:turning|going|gone) (?:blue|grey|gray)\b"),
    rule("medical_emergency", "imminent", r"\b(?:drank|drunk|swallowed|ate|took|drinking) (?:some |a (?:bottle|cup|glass|mouthful) of |a lot of )?(?:bleach|antifreeze|poison|rat poison|drain cleaner|detergent|weed killer|lighter fluid)\b"),
    rule("medical_emergency", "imminent", r"\b(?:having|think i'm having|think i am having|i'm having) (?:a )?(?:heart attack|stroke|seizure|anaphylactic|allergic reaction)\b"),
    rule("medical_emergency", "imminent", r"\b(?:bleeding|blood) (?:won't|will not|doesn't|isn't) stop(?:ping)?\b"),
    rule("medical_emergency", "imminent", r"\b(?:bleeding (?:a lot|heavily|badly|everywhere)|lost a lot of blood)\b", needs_first_person=True),
    rule("medical_emergency", "risk", r"\bchest (?:pains?|is (?:hurting|tight)|hurts)\b.*\b(?:arm|jaw|breath|sweat|dizzy|numb)\w*", needs_first_person=True),
    rule("medical_emergency", "imminent", r"\b(?:my )?(?:throat|tongue) is (?:closing|swelling)\b"),
    rule("medical_emergency", "imminent", r"\b(?:need|needs) (?:stitches|an ambulance|to go to the er|to go to the hospital)\b(?!.*\b(?:last|yesterday|years?)\b)", needs_first_person=True),
    rule("medical_emergency", "risk", r"\b(?:side of my face|my face) is (?:drooping|numb)\b"),
    rule("medical_emergency", "imminent", r"\b(?:passing|about to pass|going to pass) out\b.*\b(?:blood|pills|can't|chest|breathe)\b"),
)

# Figures of speech that look like a disclosure: removed before the rules run.
IDIOMS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (probe_for(_rx(p)), _rx(p))
    for p in (
        r"\b(?:is|are|was|were|'s|'re|it's|that's|this is|these are|keeps?) (?:\w+ )?killing me\b",
        r"\bkilling me\b(?! (?:slowly|inside))",
        r"\b(?:could|would|'d) (?:kill|murder|destroy|demolish|die) for\b",
        r"\b(?:could|would|'d|going to|will) (?:murder|kill|demolish|destroy|inhale) (?:a|an|some|this|that|the|two) (?:\w+ )?(?:pizza|burger|coffee|beer|pint|drink|sandwich|curry|meal|steak|taco|tacos|nap|workout|exam|test|presentation|interview|set|song|plate|cake|donut|bowl|kebab|burrito)s?\b",
        r"\bkill(?:ed|ing|s)? (?:it|time|the (?:vibe|mood|lights|engine|music|conversation|game)|two birds|my (?:buzz|vibe))\b",
        r"\b(?:dying|died|die|dead) (?:to|of|from) (?:laughter|laughing|embarrassment|shame|cringe|boredom|hunger|thirst|curiosity|the heat)\b",
        r"\bdying to\b",
        r"\bgoing to die (?:if|without|of|from|when)\b",
        r"\bdied laughing\b",
        r"\b(?:want|wanted|wanna) to die (?:of|from) \w+\b",
        r"\bto die for\b",
        r"\b(?:bored|scared|worried|sick|tired|frozen|loved|starving) to death\b",
        r"\bdead (?:tired|serious|set|end|line|lift|weight|inside lol)\b",
        r"\bover my dead body\b",
        r"\bdrop dead\b",
        r"\b(?:i'm|i am|we're|i was) (?:literally )?(?:dead|dying|deceased)\b(?=.*(?:lol|lmao|haha|😂|💀|!))",
        r"\bjust shoot me\b|\bshoot me now\b|\bkill me now\b",
        r"\b(?:rather|sooner) (?:die|kill myself|be dead) than\b",
        r"\bsuicide (?:mission|squad|doors?|runs?|drills?|burn|sprints?)\b",
        r"\bcut myself (?:a |some )?(?:slack|break|a deal|off)\b",
        r"\b(?:cut|burned|burnt|hurt|scratched|hit) myself (?:by accident|accidentally|shaving|cooking|chopping|while|on (?:the|a|my)|at (?:the|work|practice)|in (?:the|a|my) (?:kitchen|garden|gym)|playing|lifting|running|skiing|slicing|with the (?:kitchen )?knife while)\b",
        r"\boverdosed on (?:caffeine|coffee|sugar|netflix|chocolate|tv|candy|reality tv|memes)\b",
        r"\b(?:gave me|nearly had|almost had|having) a (?:mini )?heart attack (?:when|at|seeing|because|lol)\b",
        r"\bgave me a heart attack\b",
        r"\b(?:is|are|'s|'re) (?:going to |will |'ll )?(?:literally )?kill me (?:when|if) (?:she|he|they|my \w+) (?:sees?|finds? out|hears?|notices?|gets? home|realizes?)\b",
        r"\bend (?:it|things) with (?:him|her|them|my \w+)\b",
        r"\b(?:could|i'll|i'm going to) (?:kill|murder|strangle|throttle) (?:him|her|them|my \w+)(?: (?:sometimes|lol|haha|if|when)\b.*)?$",
        r"\bmakes? me want to (?:die|kill myself)\b(?=.*\b(?:lol|lmao|haha|jk)\b|.*[😂💀])",
        r"\b(?:lol|lmao|haha\w*)\b.*\bmakes? me want to (?:die|kill myself)\b",
        r"\bcan't breathe\b(?=.*\b(?:laugh\w*|lol|lmao|haha|hilarious|funny)\b|.*[😂💀])",
        r"\blaugh\w* so hard i (?:can't breathe|cried|died)\b",
        r"\b(?:killer|murder) (?:workout|deal|view|app|show|playlist|mystery|podcast)s?\b",
        r"\bkilled (?:it|my (?:presentation|exam|workout|set|interview))\b",
        r"\bmurder(?:ed)? (?:this|that|the|my) (?:workout|exam|test|run|presentation|interview|set)\b",
        r"\bdeath (?:metal|stare)\b",
    )
)

# Quoted media and fiction: a clause that is about a story is not about the speaker.
MEDIA = _rx(
    r"\b(?:movie|film|show|series|episode|song|lyrics?|book|novel|character|protagonist|anime|manga|documentary|"
    r"podcast|article|the news|video game|game|season \d|play|opera|poem|story|fanfic|netflix)\b"
)

# A first-person clause about one's own distant past ("years ago", "when I was 15").
DISTANT_PAST = _rx(
    r"\b(?:years? ago|a long time ago|back in (?:high school|college|\d{4})|when i was (?:a kid|little|young|younger|a teen(?:ager)?|in (?:high |middle )?school|\d+)|"
    r"as a (?:kid|teen|teenager|child)|in my (?:teens|twenties|childhood)|in the past|growing up|used to|as a little (?:girl|boy)|"
    r"\d+ years (?:ago|clean|free|sober)|in high school|in college)\b"
)
# ...unless the same message says it is happening again now.
PRESENT_AGAIN = _rx(
    r"\b(?:again|lately|recently|these days|right now|tonight|today|this week|last night|yesterday|this morning|"
    r"currently)\b"
)
# Plan, means or timeline: raise an ideation or intent flag to imminent.
PLAN_MEANS_TIMELINE = _rx(
    r"\b(?:tonight|today|tomorrow|this weekend|right now|after (?:everyone|they)(?:'s| is| are)? (?:asleep|gone)|"
    r"when (?:everyone|they)(?:'s| is| are)? (?:asleep|gone)|i have a plan|i've planned|made a plan|planned it|"
    r"pills?|rope|noose|gun|bridge|razor|blade|knife|jump(?:ing)? off|hang(?:ing)? myself|overdose|"
    r"wrote (?:a |my )?(?:note|letter)|decided how|know how i'?m going to|the date|said my goodbyes)\b"
)
# Self-harm is left out: describing the blade is common and is not a plan to die.
ESCALATES_WITH_PLAN: frozenset[Category] = frozenset({"suicidal_ideation", "harm_to_others"})

# The speaker's crisis is over: recovery in so many words. With a distance marker and nothing
# happening now ("i used to self harm but that chapter's closed"), the message is history.
RECOVERED = _rx(
    r"\b(?:recovery|recovered|in remission|(?:\d+|one|two|three|four|five|six|ten) (?:days?|weeks?|months?|years?) clean|"
    r"clean (?:for|chip|since)|chapter(?:'s| is) closed|behind me|(?:so |really )?glad i (?:stuck around|stayed|'m still here|am still here)|"
    r"(?:that|it) was the (?:depression|illness) talking|helped me through|doing (?:really )?(?:well|good|great) now|"
    r"haven't (?:needed|felt|had) (?:it|that|one|the urge|urges)|done with (?:self[- ]?harm|cutting|it) for good)\b"
)
# ...unless the message says the pull is back.
STILL_PULLED = _rx(r"\b(?:urges?|craving|relapsed?|tempted|broke it|miss (?:it|doing it)|want to (?:again|do it))\b")

# Someone asked a screening question and the speaker answered no ("my therapist asked if I
# had thoughts of suicide and honestly the answer is no").
ASKED = _rx(r"\b(?:asked|asks|asking|ask) (?:me )?(?:if|whether|about)\b")
ANSWERED_NO = _rx(
    r"\b(?:(?:i )?said no|answer(?:ed)? (?:is |was )?(?:no|nope)|nope|none of (?:that|those|it)|not really|"
    r"(?:i )?told (?:him|her|them) no|the answer's no)\b"
)

# Said before the speaker, these negate what follows even across "i": "not that i'd ever...",
# "no way i'd...", "it's not like i want to die".
NEGATING_LEAD = _rx(
    r"\b(?:not that|(?:it's |its )?not like|no way|there's no way|not once (?:did|have|had)|never once (?:did|have)|"
    r"never said|never thought) (?:i|i'd|i'm|i've|i'll|i would|i will)\b(?: \w+){0,4} ?$"
)
# Said right after a match, these negate it: "killing myself has never been an option".
NEGATING_TAIL = _rx(r"^ ?(?:has|have|had|is|was|were|'s) (?:never|not)\b|^ ?(?:isn't|wasn't|hasn't|haven't|hadn't|weren't)\b")
# Negators a pattern did not spell itself, inside its match ("my partner has never threatened me").
INNER_NEGATOR = _rx(r"\b(?:never|not|no longer|hasn't|hadn't|doesn't|didn't|wouldn't|won't|isn't|wasn't)\b")

# A past emergency, someone else's: "my grandpa had a heart attack last year".
LONG_OVER = _rx(
    r"\b(?:last (?:year|summer|winter|spring|autumn|fall|month|christmas)|(?:a )?(?:few|couple of|couple|two|three|\d+) "
    r"(?:years?|months?) (?:ago|back)|decades? ago|(?:back )?in (?:19|20)\d\d|in the (?:\d0s|war)|when (?:i|we) (?:was|were) "
    r"(?:kids?|little|young|\d+)|before i was born|years ago)\b"
)

LAUGHTER = _rx(r"(?:\b(?:lol|lmao|lmfao|haha\w*|rofl|jk|kidding)\b|[😂🤣💀])")

NEGATORS = frozenset(
    {"not", "never", "no", "don't", "didn't", "won't", "wouldn't", "can't", "couldn't", "isn't", "aren't",
     "wasn't", "weren't", "haven't", "hasn't", "hadn't", "nobody", "nothing", "neither", "nor", "shouldn't",
     "doesn't", "ain't", "without"}
)
# "can't stop thinking about it" is the opposite of a negation.
NEGATION_RELEASERS = frozenset({"stop", "help", "shake", "escape", "resist", "control", "fight", "handle", "explain"})
# Negation does not reach across these ("I don't know why I want to die").
SCOPE_BREAKERS = frozenset(
    {"i", "i'm", "i've", "i'd", "that", "why", "if", "because", "and", "so", "when", "how", "whether", "but", "what"}
)
FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll", "me", "my", "myself", "we", "we're"})
THIRD_PERSON = frozenset(
    {"he", "she", "they", "he's", "she's", "they're", "he'd", "she'd", "they'd", "he'll", "she'll", "they'll",
     "his", "her", "their", "him", "them", "himself", "herself", "themselves", "someone", "somebody",
     "friend", "friend's", "friends", "brother", "sister", "mom", "mum", "mother", "dad", "father", "cousin", "son",
     "daughter", "husband", "wife", "partner", "boyfriend", "girlfriend", "bf", "gf", "ex", "fiance", "fiancee",
     "uncle", "aunt", "auntie", "grandpa", "grandma", "grandad", "granddad", "grandfather", "grandmother", "granny",
     "nan", "nana", "nanna", "grandson", "granddaughter", "nephew", "niece", "stepdad", "stepmom", "stepmum",
     "stepfather", "stepmother", "stepbrother", "stepsister", "parents", "sibling", "siblings", "baby", "toddler",
     "child", "children", "kids", "bestie", "mate", "roommate", "flatmate", "housemate", "teammate", "boss",
     "manager", "teacher", "coach", "character", "guy", "girl", "boy", "man", "woman", "kid", "people",
     "classmate", "coworker", "colleague", "neighbor", "neighbour", "client", "patient", "student", "celebrity"}
)

# Normalisation: spell common chat shorthand once, so the tables above need not.
SHORTHAND: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (_rx(p), r)
    for p, r in (
        (r"[’‘`´]", "'"),
        (r"[“”]", '"'),
        (r"\bim\b", "i'm"),
        (r"\bive\b", "i've"),
        (r"\bid\b(?= (?:rather|be|like|love|kill|never))", "i'd"),
        (r"\bdont\b", "don't"),
        (r"\bcant\b", "can't"),
        (r"\bwont\b", "won't"),
        (r"\bdidnt\b", "didn't"),
        (r"\bwouldnt\b", "wouldn't"),
        (r"\bgonna\b", "going to"),
        (r"\bwanna\b", "want to"),
        (r"\bkms\b", "kill myself"),
        (r"\bunalive (?:myself|me)\b", "kill myself"),
        (r"\bi am\b", "i'm"),
        (r"\bwhats\b", "what's"),
        (r"\bdo not\b", "don't"),
        (r"\bcannot\b", "can't"),
        (r"\s+", " "),
    )
)
