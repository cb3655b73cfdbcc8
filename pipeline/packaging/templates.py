"""Foundry Local's PromptTemplate, derived from the model's own chat template.

Foundry Local builds a prompt message by message: the `system`, `user` and `assistant` parts
with `{Content}` replaced by the message text, and the `prompt` part for the last user message
(that turn followed by the assistant prefix). We render the chat template with sentinel texts,
cut the renders into those parts, and check that the parts put back together give exactly what
the template renders. Rendering follows transformers' `apply_chat_template(..., tokenize=False)`
without importing transformers.

Token ids follow from text: ONNX Runtime GenAI's tokenizer encodes a prompt with
add_special_tokens off (0.11 and later, so Foundry Local's 0.14.1 too) and never adds a bos
token itself, and transformers' `apply_chat_template(tokenize=True)` encodes its render the same
way. So a bos token the chat template writes must be in the parts, exactly where the template
puts it, and equal text gives equal ids.

For a tokenizer without a chat template, TEMPLATE_FAMILIES names the real templates shipped in
pipeline/data/chat_templates/ (a recipe picks one with package.foundry_local.template_family).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pipeline.errors import PackageError

CONTENT = "{Content}"
PARTS = ("system", "user", "assistant", "prompt")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")

# Texts no template alters (no spaces to trim, no braces, no tokens) and that appear nowhere else.
_SENTINEL = {"system": "SYSPROMPTX7", "user": "USERMSGX7", "assistant": "ASSISTANTMSGX7", "prompt": "USERMSGX7"}
_NEXT_USER = "NEXTUSERX7"
# Verification texts: braces (fill must not use str.format) and newlines must survive.
_CHECK_SYSTEM = "Be brief. {Braces} stay as they are.\nSecond line."
_CHECK_TURNS = ("Hi {name}!\nWhat does {Content} mean?", "It is a placeholder.\n{ok}", "And {x}?")
# A split point must not fall inside a token such as <|endoftext|>, </s> or <end_of_turn>.
TOKEN_RE = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class DerivedTemplate:
    """A PromptTemplate for inference_model.json and how faithful it is."""

    template: dict[str, str]  # keys system, user, assistant, prompt
    exact: bool  # all verification renders matched
    notes: tuple[str, ...]  # what was approximated, human-readable


# ---------------------------------------------------------------------------------------------
# Chat templates shipped for tokenizers that have none

CHAT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "chat_templates"
# Where the byte-exact copies came from (copied by program from these files, never retyped).
LLAMA_CPP = "ggml-org/llama.cpp (as in its fork ye-NX/llama.cpp at 1eeb523c3e0c7ffbd59469f5463dcbdecba3535e)"
ORT_EXTENSIONS = "microsoft/onnxruntime-extensions at 319f8d2c02c4e2f013129bea52e70e75ba79bbcf"


@dataclass(frozen=True)
class TemplateFamily:
    """A real model's chat template that stands for a family of models."""

    name: str  # what package.foundry_local.template_family says
    model: str  # the Hugging Face model whose template the file is
    file: str  # under pipeline/data/chat_templates/
    source: str  # repository and path the file was copied from


TEMPLATE_FAMILIES: dict[str, TemplateFamily] = {f.name: f for f in (
    # Plain ChatML with no default system prompt; reasoning (<think>) kept out of the history.
    TemplateFamily("chatml", "Qwen/Qwen3-0.6B", "chatml.jinja",
                   f"{LLAMA_CPP}: models/templates/Qwen-Qwen3-0.6B.jinja"),
    TemplateFamily("phi3", "microsoft/Phi-3.5-mini-instruct", "phi3.jinja",
                   f"{LLAMA_CPP}: models/templates/microsoft-Phi-3.5-mini-instruct.jinja"),
    TemplateFamily("phi4-mini", "microsoft/Phi-4-mini-instruct", "phi4-mini.jinja",
                   f"{ORT_EXTENSIONS}: test/data/phi-4-mini/tokenizer_config.json, \"chat_template\""),
    TemplateFamily("llama3", "meta-llama/Llama-3.2-3B-Instruct", "llama3.jinja",
                   f"{LLAMA_CPP}: models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja"),
    TemplateFamily("mistral-v0.2", "mistralai/Mistral-7B-Instruct-v0.2", "mistral-v0.2.jinja",
                   f"{LLAMA_CPP}: tests/test-chat-template.cpp, the template_str of \"mistralai/Mistral-7B-"
                   "Instruct-v0.2 (mistralai 'v1' template with a system prompt)\""),
    TemplateFamily("gemma", "google/gemma-3-*-it", "gemma.jinja",
                   f"{ORT_EXTENSIONS}: test/data/models/gemma-3/tokenizer_config.json, \"chat_template\" "
                   "(equal to test/data/gemma-3-chat/chat_template.json)"),
    TemplateFamily("deepseek-r1", "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1.jinja",
                   f"{LLAMA_CPP}: models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja "
                   "(the Distill-Llama-8B file there is the same text)"),
)}


def get_template_family(name: str) -> TemplateFamily:
    """The family called `name`; PackageError listing the known ones otherwise."""
    try:
        return TEMPLATE_FAMILIES[name]
    except KeyError:
        raise PackageError(f"unknown template family {name!r} (known: {', '.join(TEMPLATE_FAMILIES)})") from None


def family_chat_template(name: str) -> str:
    """The chat template text of family `name`, as the real model ships it."""
    return (CHAT_TEMPLATES_DIR / get_template_family(name).file).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Rendering, as transformers.utils.chat_template_utils does it


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag): renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes, as transformers' sandbox does."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")


class _Dict:
    """`dict()` without access to the dict type itself (transformers' TemplateDict)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters; templates expect plain json.dumps.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(chat_template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = _Dict()
    env.globals["namespace"] = _Namespace
    return env.from_string(chat_template)


def render_chat_template(
    chat_template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool,
    special_tokens: dict[str, str | None],
    now: datetime | None = None,
    template_kwargs: dict | None = None,
) -> str:
    """What `tokenizer.apply_chat_template(messages, tokenize=False, ...)` returns.

    `special_tokens` are passed to the template by name (bos_token, eos_token, ...); None values
    are left undefined, as transformers does. `now` fixes the clock of `strftime_now` (default:
    the current time). `template_kwargs` are the extra variables apply_chat_template passes on
    (e.g. enable_thinking). Raises jinja2.TemplateError when the template does (raise_exception)
    or does not parse.
    """
    context = {k: v for k, v in special_tokens.items() if v is not None}
    context.update(template_kwargs or {})
    if now is not None:
        context["strftime_now"] = now.strftime
    # transformers drops None-valued keys: templates test for a key's presence, not for None.
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    return _compile(chat_template).render(
        messages=messages,
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
        **context,
    )


# ---------------------------------------------------------------------------------------------
# Foundry's side: composing a prompt from the four parts


def fill(template: dict[str, str], messages: list[dict]) -> str:
    """The prompt Foundry Local composes: each message through its role's part, the last user
    message through `prompt`. A missing part inserts the text as is. Content is inserted with
    str.replace, so braces in it are kept."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    out = []
    for i, message in enumerate(messages):
        part = "prompt" if i == last_user else message["role"]
        if part not in PARTS:
            raise ValueError(f"message {i}: role {message['role']!r} has no PromptTemplate part")
        out.append(template.get(part, CONTENT).replace(CONTENT, message["content"]))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Deriving the parts


def derive_prompt_template(
    chat_template: str, special_tokens: dict[str, str | None]
) -> DerivedTemplate:
    """The four PromptTemplate parts that reproduce `chat_template`.

    `exact` is True when system+prompt and system+user+assistant+prompt, filled with texts
    holding braces and newlines, equal the template's renders character for character. A
    template that refuses a system message, or does not give one a turn of its own (it folds it
    into the first user turn), is never exact: its user, assistant and prompt parts come from
    conversations without one, and a system message becomes a user turn of its own. What could
    not be matched, and behaviour Foundry cannot reproduce (a default system turn, the current
    date, trimmed content, reasoning kept out of the history), is explained in `notes`. Raises
    PackageError only for a template that does not parse.
    """
    try:
        _compile(chat_template)
    except jinja2.TemplateSyntaxError as e:
        raise PackageError(f"chat template does not parse (line {e.lineno}): {e.message}") from None

    now = datetime.now()  # one clock for every render, so dates cannot differ between them

    def render(messages, gen=False, at=now, **template_kwargs):
        try:
            return render_chat_template(
                chat_template, messages, add_generation_prompt=gen, special_tokens=special_tokens, now=at,
                template_kwargs=template_kwargs,
            )
        except jinja2.TemplateError:
            raise
        except Exception as e:  # a template is foreign code: any failure is the template's
            raise jinja2.TemplateError(f"{type(e).__name__}: {e}") from e

    problems: list[str] = []  # each one makes the result approximate
    remarks: list[str] = []  # behaviour worth knowing that does not affect exactness
    tokens = [t for t in special_tokens.values() if t]
    system, user, assistant = ({"role": r, "content": _SENTINEL[r]} for r in ("system", "user", "assistant"))

    with_system, system_error = _attempt(render, [system, user, assistant], tokens)
    without_system, user_error = _attempt(render, [user, assistant], tokens)
    if with_system and (not with_system[1] or not without_system or without_system[1]):
        (template, found), system_supported = with_system, True
        problems += found
    elif without_system:
        (template, found), system_supported = without_system, False
        template = {"system": template["user"], **template}  # a system message: a user turn of its own
        problems.append(_system_note(render, system_error, template, special_tokens.get("bos_token")))
        problems += found
    else:
        system_supported = False
        problems.append(f"the chat template fails with a user message too ({user_error}); every part is the bare text")
        template = {part: CONTENT for part in PARTS}

    _verify(render, template, system_supported, special_tokens.get("bos_token"), problems)
    for explain in (_explain_defaults, _explain_trimming, _explain_dates, _explain_reasoning, _explain_switches):
        try:
            explain(render, template, special_tokens, now, remarks)
        except jinja2.TemplateError:
            pass  # these checks only add remarks; a failing render has been reported above
    _explain_bos(template, special_tokens, remarks)
    return DerivedTemplate(template=template, exact=not problems, notes=tuple(problems + remarks))


def _attempt(render, convo: list[dict], tokens: list[str]):
    """((parts with {Content}, problems), None) for `convo`, or (None, error) when the template
    refuses it."""
    problems: list[str] = []
    try:
        parts = _cut(render, convo, tokens, problems)
    except jinja2.TemplateError as e:
        return None, e
    template = {part: _placeholder(part, parts[part], problems) for part in PARTS if part in parts}
    return (template, problems), None


def _system_note(render, error: Exception | None, template: dict[str, str], bos: str | None) -> str:
    """Why a system message becomes a user turn of its own."""
    instead = "Foundry Local's parts cannot say that, so a system message becomes a user turn of its own"
    if bos and template["system"].startswith(bos) and template["prompt"].startswith(bos):
        instead += f" (and bos_token {bos!r}, which opens both the system and the prompt part, appears twice)"
    if error is not None:
        return f"the chat template refuses a system message ({error}); {instead}"
    messages = [{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "USER"}]
    try:
        rendered = render(messages, gen=True)
    except jinja2.TemplateError as e:
        return f"the chat template fails with a system message and a user message ({e}); {instead}"
    if "SYSTEM" not in rendered:
        return f"the chat template leaves a system message out (SYSTEM, then USER, renders {rendered!r}); {instead}"
    return (f"the chat template gives a system message no turn of its own (SYSTEM, then USER, renders "
            f"{rendered!r}); {instead}")


def _cut(render, convo: list[dict], tokens: list[str], problems: list[str]) -> dict[str, str]:
    """Cut renders of growing prefixes of `convo` into one part per message, plus `prompt`
    (the render with generation prompt after the user message, minus what precedes it)."""
    renders = [render(convo[: k + 1]) for k in range(len(convo))]
    # Some templates close every render with a trailer (Phi-3 appends eos_token when no
    # generation prompt is asked for); it belongs to no message.
    trailer = renders[0][_split_point(renders[0], renders[1], tokens):]
    if not all(r.endswith(trailer) for r in renders) or any(m["content"] in trailer for m in convo):
        problems.append(f"renders do not end alike; no common trailer found ({trailer!r})")
        trailer = ""
    bodies = [r[: len(r) - len(trailer)] for r in renders]

    parts, before = {}, ""
    for message, body in zip(convo, bodies):
        if not body.startswith(before):
            problems.append(
                f"adding a {message['role']} message changes the text before it "
                f"({_difference(before, body)}); its part starts where they first differ"
            )
            before = before[: _split_point(before, body, tokens)]
        parts[message["role"]] = body[len(before):]
        before = body

    # Foundry Local uses the assistant part for history, always followed by a user turn; some
    # templates write the last assistant message differently (Qwen3 opens an empty <think>
    # block there), so cut it from a conversation that goes on.
    at_assistant = next((i for i, m in enumerate(convo) if m["role"] == "assistant"), None)
    if at_assistant:
        follow = {"role": "user", "content": _NEXT_USER}
        next_part = parts["user"].replace(_SENTINEL["user"], _NEXT_USER)
        went_on = render(convo[: at_assistant + 1] + [follow])
        went_on = went_on[: len(went_on) - len(trailer)] if went_on.endswith(trailer) else went_on
        start = bodies[at_assistant - 1]
        if went_on.startswith(start) and went_on.endswith(next_part) and len(start) + len(next_part) <= len(went_on):
            parts["assistant"] = went_on[len(start): len(went_on) - len(next_part)]

    at_user = next(i for i, m in enumerate(convo) if m["role"] == "user")
    before = bodies[at_user - 1] if at_user else ""
    with_prompt = render(convo[: at_user + 1], gen=True)
    if not with_prompt.startswith(before):
        problems.append(
            f"asking for a generation prompt changes earlier text ({_difference(before, with_prompt)})"
        )
        before = before[: _split_point(before, with_prompt, tokens)]
    parts["prompt"] = with_prompt[len(before):].replace(_SENTINEL["user"], _SENTINEL["prompt"])
    return parts


def _placeholder(part: str, text: str, problems: list[str]) -> str:
    """`text` with its sentinel replaced by {Content}; a problem unless there is exactly one."""
    count = text.count(_SENTINEL[part])
    if count != 1:
        problems.append(
            f"the {part} part holds the message text {count} times instead of once: {text!r}"
        )
    stray = [s for s in set(_SENTINEL.values()) if s != _SENTINEL[part] and s in text]
    if stray:
        problems.append(f"the {part} part holds another message's text: {text!r}")
    return text.replace(_SENTINEL[part], CONTENT)


def _verify(render, template: dict[str, str], with_system: bool, bos: str | None, problems: list[str]) -> None:
    u1, a1, u2 = ({"role": r, "content": c} for r, c in zip(("user", "assistant", "user"), _CHECK_TURNS))
    if with_system:
        system = {"role": "system", "content": _CHECK_SYSTEM}
        conversations = {"system + user": [system, u1], "system + user + assistant + user": [system, u1, a1, u2]}
    else:
        conversations = {"user": [u1], "user + assistant + user": [u1, a1, u2]}
    for name, messages in conversations.items():
        try:
            expected = render(messages, gen=True)
        except jinja2.TemplateError as e:
            problems.append(f"{name}: the chat template fails ({e})")
            continue
        got = fill(template, messages)
        if expected == got:
            continue
        if bos and expected.count(bos) == 1 and got.replace(bos, "") == expected.replace(bos, ""):
            opening = [p for p in PARTS if template[p].startswith(bos)]
            problems.append(
                f"{name}: the chat template writes bos_token {bos!r} once, at the start of the conversation; "
                f"the parts give it {got.count(bos)} times, as it opens the {_and(opening)} "
                f"part{'s' * (len(opening) > 1)} and Foundry Local uses those for every such message"
            )
        else:
            problems.append(f"{name}: the parts do not give the template's render; {_difference(expected, got)}")


def _explain_defaults(render, template, special_tokens, now, remarks) -> None:
    messages = [{"role": "user", "content": _CHECK_TURNS[0]}]
    try:
        expected = render(messages, gen=True)
    except jinja2.TemplateError as e:
        remarks.append(f"the chat template fails without a system message ({e})")
        return
    got = fill(template, messages)
    if expected == got:
        return
    if not expected.endswith(got):
        remarks.append(f"without a system message the parts differ from the template: {_difference(expected, got)}")
        return
    inserted = expected[: len(expected) - len(got)]
    if inserted == special_tokens.get("bos_token"):
        remark = (f"without a system message the prompt lacks the bos_token {inserted!r} the chat template "
                  "opens every conversation with (it opens the system part, which Foundry Local uses only "
                  "when a system message is given)")
    else:
        remark = (f"without a system message the chat template inserts {inserted!r} before the first turn; "
                  "Foundry Local uses the system part only when a system message is given, so prompts without "
                  "one lack it")
    try:
        empty_system = [{"role": "system", "content": ""}] + messages
        if "{Content}" in template["system"] and fill(template, empty_system) == expected:
            remark += "; an empty system message gives exactly the template's render"
    except jinja2.TemplateError:
        pass
    remarks.append(remark)


def _explain_trimming(render, template, special_tokens, now, remarks) -> None:
    padded = "  padded text \n"
    rendered = render([{"role": "user", "content": padded}], gen=True)
    if padded not in rendered and padded.strip() in rendered:
        remarks.append(
            "the chat template strips whitespace around message text; the parts insert it as given"
        )


def _explain_dates(render, template, special_tokens, now, remarks) -> None:
    messages = [{"role": "user", "content": "U"}]
    if render(messages, gen=True) != render(messages, gen=True, at=now - timedelta(days=400)):
        remarks.append(
            "the chat template writes the current date (strftime_now); the parts hold the date "
            f"they were derived on, {now:%Y-%m-%d}"
        )


_REASONING = "<think>\nREASONINGX7\n</think>\n\nANSWERX7"


def _explain_reasoning(render, template, special_tokens, now, remarks) -> None:
    """Reasoning models: what the template does with <think> blocks."""
    messages = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": _REASONING},
                {"role": "user", "content": "U2"}]
    rendered = render(messages, gen=True)
    if "ANSWERX7" in rendered and "REASONINGX7" not in rendered:
        remarks.append(
            "the chat template drops the reasoning (<think>...</think>) of earlier assistant messages; "
            "Foundry Local inserts assistant messages as given, so send them without it"
        )
    opened = template["prompt"].rfind("<think>")
    if opened >= 0 and "</think>" not in template["prompt"][opened:]:
        remarks.append(
            f"the prompt part ends by opening a reasoning block ({template['prompt'][opened:]!r}), as the "
            "chat template's generation prompt does: the reply starts with the model's reasoning"
        )


def _explain_switches(render, template, special_tokens, now, remarks) -> None:
    """Switches a template reads that Foundry Local cannot set: enable_thinking, /no_think."""
    messages = [{"role": "user", "content": "U"}]
    default, off = render(messages, gen=True), render(messages, gen=True, enable_thinking=False)
    if off != default:
        n = _split_point(default, off, [])
        remarks.append(
            f"the chat template switches reasoning off with enable_thinking=False (it then writes "
            f"{off[n:n + 40]!r} where it otherwise writes {default[n:n + 40]!r}); Foundry Local cannot pass "
            "it, so the parts follow the template's default"
        )
    flagged = [{"role": "system", "content": "S /no_think"}, {"role": "user", "content": "U"}]
    rendered = render(flagged, gen=True)
    if "S /no_think" not in rendered and fill(template, flagged) != rendered:
        remarks.append(
            "the chat template reads '/no_think' in a system message (it removes the flag and switches "
            "reasoning off); the parts insert the system text as given"
        )


def _explain_bos(template: dict[str, str], special_tokens: dict[str, str | None], remarks: list[str]) -> None:
    bos = special_tokens.get("bos_token")
    starts = [p for p in PARTS if bos and template[p].startswith(bos)]
    if starts:
        remarks.append(
            f"bos_token {bos!r} opens the {_and(starts)} part{'s' * (len(starts) > 1)}, as the chat "
            "template writes it; ONNX Runtime GenAI adds none of its own when encoding (add_special_tokens is "
            "off), so the text decides how many there are"
        )


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _split_point(a: str, b: str, tokens: list[str]) -> int:
    """Length of the common prefix of a and b, moved back so it does not cut a token of `a`."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    spans = [m.span() for m in TOKEN_RE.finditer(a)]
    spans += [(i, i + len(t)) for t in tokens for i in _find_all(a, t)]
    for start, end in spans:
        if start < n < end:
            n = start
    return n


def _find_all(text: str, sub: str):
    i = text.find(sub)
    while i >= 0:
        yield i
        i = text.find(sub, i + 1)


def _difference(expected: str, got: str) -> str:
    n = _split_point(expected, got, [])
    return f"from character {n} the template gives {expected[n:n + 60]!r} but the parts give {got[n:n + 60]!r}"


# ---------------------------------------------------------------------------------------------
# Reading a tokenizer folder


def load_tokenizer_template(folder: Path) -> tuple[str | None, dict[str, str | None]]:
    """The chat template and special tokens of the tokenizer in `folder`.

    The template comes from chat_template.jinja, else tokenizer_config.json's "chat_template"
    (a string, or a list of {name, template} of which the "default" one); None when there is
    none. Special tokens (bos/eos/unk/pad) come from tokenizer_config.json, else
    special_tokens_map.json, as strings or {"content": ...}; None when absent.
    """
    folder = Path(folder)
    config = _read_json(folder / "tokenizer_config.json")
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
    else:
        template = config.get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if not isinstance(template, str):
            template = None

    tokens_map = _read_json(folder / "special_tokens_map.json")
    special: dict[str, str | None] = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = config[key] if key in config else tokens_map.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        special[key] = value if isinstance(value, str) else None
    return template, special


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: not valid JSON ({e}). Fix or regenerate the tokenizer files.") from None
    if not isinstance(data, dict):
        raise PackageError(f"{path}: expected a JSON object")
    return data
