"""The realistic mix's corpus (bench_core.py): a fixed, seeded set of chat request bodies.

Prompt lengths follow a clipped lognormal, as chat datasets' do (ShareGPT, LMSYS-Chat: tens to a few
thousand tokens, a long tail): median ~250 tokens, sigma 1.1, clipped to [16, 4096]. The text is
English-like, words drawn with Zipf weights from a list of common words, in sentences and
paragraphs, with an occasional number. Shapes: a bare user message (55 %), one of four shared
system prompts and a user message (25 %), or a system prompt and 1–3 earlier exchanges before
the last user message (20 %); 35 % ask for ``"stream": true``; models gpt-4o and gpt-4o-mini.

Every user and assistant text carries a ``{{TAG}}`` that chat_mix.lua turns into a 12-digit tag
unique to the request (always four 3-digit tokens), so only the system prompts repeat.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

TAG = "{{TAG}}"
CHECK_TAG = "0" * 12  # what a body's tags become for the one-off requests of the check

WORDS = """
the of and to a in is it you that he was for on are with as I his they be at one have this from or
had by not word but what some we can out other were all there when up use your how said an each
she which do their time if will way about many then them write would like so these her long make
thing see him two has look more day could go come did number sound no most people my over know
water than call first who may down side been now find any new work part take get place made live
where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand
port large spell add even land here must big high such follow act why ask men change went light
kind off need house picture try us again animal point mother world near build self earth father
head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw
far sea draw left late run while press close night real life few north open seem together next
white children begin got walk example ease paper group always music those both mark often letter
until mile river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch color face wood main enough plain girl usual
young ready above ever red list though feel talk bird soon body dog family direct pose leave song
measure door product black short numeral class wind question happen complete ship area half rock
order fire south problem piece told knew pass since top whole king space heard best hour better
true during hundred five remember step early hold west ground interest reach fast verb sing listen
six table travel less morning ten simple several vowel toward war lay against pattern slow center
love person money serve appear road map rain rule govern pull cold notice voice unit power town
fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest correct
able pound done beauty drive stood contain front teach week final gave green quick develop ocean
warm free minute strong special mind behind clear tail produce fact street inch multiply nothing
course stay wheel full force blue object decide surface deep moon island foot system busy test
record boat common gold possible plane instead dry wonder laugh thousand ago ran check game shape
equate miss brought heat snow tire bring yes distant fill east paint language among function
database server request customer invoice deploy cluster latency error config python report
""".split()

SYSTEM_PROMPTS_SEED = (
    "You are a helpful assistant. Answer concisely and use bullet points where it helps.",
    "You are a customer support agent for an online store. Be polite, ask for the order number when "
    "it is missing, never promise refunds you cannot give, and keep answers under 200 words.",
)


class _Text:
    """English-like text of about a given number of tokens (about 1.2 tokens a word)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.weights = [1 / (rank + 3) for rank in range(len(WORDS))]

    def words(self, count: int) -> str:
        rng = self.rng
        picked = rng.choices(WORDS, self.weights, k=count)
        out: list[str] = []
        sentence = 0
        target = rng.randint(6, 22)
        for word in picked:
            if rng.random() < 0.02:
                word = str(rng.randint(2, 2030))
            if sentence == 0:
                word = word.capitalize()
                if out and rng.random() < 0.25:  # a new paragraph
                    out[-1] += "\n\n"
            sentence += 1
            if sentence >= target:
                word += rng.choice(".....?!")
                sentence, target = 0, rng.randint(6, 22)
            elif rng.random() < 0.07:
                word += ","
            out.append(word)
        text = " ".join(out).replace("\n\n ", "\n\n")
        return text if text[-1] in ".?!" else text + "."

    def tokens(self, count: int) -> str:
        return self.words(max(1, round(count / 1.2)))


def prompt_tokens_target(rng: random.Random) -> int:
    return min(4096, max(16, round(rng.lognormvariate(math.log(250), 1.1))))


def build(count: int = 1000, seed: int = 11) -> list[str]:
    """``count`` bodies, one JSON text each (no newline inside), the same for the same seed."""
    rng = random.Random(seed)
    text = _Text(rng)
    systems = [*SYSTEM_PROMPTS_SEED, text.tokens(350), text.tokens(1200)]
    lines = []
    for _ in range(count):
        total = prompt_tokens_target(rng)
        shape = rng.random()
        messages: list[dict[str, str]] = []
        if shape >= 0.55:
            system = rng.choice(systems)
            messages.append({"role": "system", "content": system})
            total = max(16, total - round(len(system) / 4.5))
        if shape >= 0.80:  # earlier turns: most of the length is history
            turns = rng.randint(1, 3)
            last = max(8, round(total * rng.uniform(0.1, 0.4)))
            each = max(8, (total - last) // (2 * turns))
            for _ in range(turns):
                messages.append({"role": "user", "content": f"{text.tokens(each // 3)} (ref {TAG})"})
                messages.append({"role": "assistant", "content": f"{text.tokens(each * 5 // 3)} (ref {TAG})"})
            total = last
        messages.append({"role": "user", "content": f"{text.tokens(total)} (ref {TAG})"})
        body: dict[str, object] = {
            "model": "gpt-4o" if rng.random() < 0.7 else "gpt-4o-mini",
            "messages": messages,
            "temperature": rng.choice((0, 0.2, 0.7, 1.0)),
            "max_tokens": rng.choice((256, 512, 1024, 2048)),
        }
        if rng.random() < 0.35:
            body["stream"] = True
        elif rng.random() < 0.5:
            body["stream"] = False
        lines.append(json.dumps(body))  # "stream": true, as floors.mixed looks for it
    return lines


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def for_check(line: str, tag: str = CHECK_TAG, stream: bool | None = None) -> bytes:
    """A body with its tags filled in; ``stream`` False turns a stream request into a plain one
    (whose usage gives the prompt tokens)."""
    filled = line.replace(TAG, tag)
    if stream is None:
        return filled.encode()
    body = json.loads(filled)
    body["stream"] = stream
    body.pop("stream_options", None)
    return json.dumps(body).encode()


def describe(lines: list[str]) -> dict[str, object]:
    bodies = [json.loads(line) for line in lines]
    return {
        "bodies": len(bodies),
        "bytes_mean": round(sum(map(len, lines)) / len(lines)),
        "stream_share": round(sum(1 for b in bodies if b.get("stream")) / len(bodies), 3),
        "system_share": round(
            sum(1 for b in bodies if b["messages"][0]["role"] == "system") / len(bodies), 3
        ),
        "multi_turn_share": round(sum(1 for b in bodies if len(b["messages"]) > 2) / len(bodies), 3),
    }
