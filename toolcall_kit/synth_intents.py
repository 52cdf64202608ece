"""Hand-written phrasings, value pools and fake tool executors for the shipped catalogs (used by `synth`).

Template mini-language (rendered by `synth.render`):
    {slot}      a value from the intent's sampler; its argument is set only when the slot is mentioned,
                so every argument is derivable from the user's words (optional arguments ride on
                optional segments);
    {^slot}     the same, first letter capitalised (the slot opens a sentence);
    {slot.2}    parallel templates: the slot of the 2nd call (a slot without `.k` is shared by all calls);
    [ ... ]     an optional segment, kept with probability 1/2;
    <a|b|c>     one alternative, chosen at random (lexical variety inside one template).

Every template has an id (`<group>/<nn>`, e.g. `get_weather/03`); `synth --split train|eval` holds out
a share of the ids of every group (and of the open value pools: cities, names, tickers, ...) so the
evaluation set measures generalisation to unseen phrasings and values, not recall.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# ----------------------------------------------------------------------------------------------
# Sampling context and slots


@dataclass(frozen=True)
class Slot:
    text: str  # what the user says
    arg: str | None = None  # dotted argument path it sets ("address.city"); "*" merges a dict; None: wording
    value: Any = None
    needs_today: bool = False  # relative dates ("tomorrow") need today's date in the system prompt


def S(text: str, arg: str | None = None, value: Any = None, today: bool = False) -> Slot:
    return Slot(text, arg, value, today)


def pool_partition(name: str, size: int, fraction: float, holdout_seed: int) -> frozenset[int]:
    """Indices of a pool (or template group) held out for evaluation: the same for every generation seed."""
    if size < 2 or fraction <= 0:
        return frozenset()
    k = min(size - 1, max(1, round(fraction * size)))
    idx = list(range(size))
    random.Random(f"holdout:{holdout_seed}:{name}").shuffle(idx)
    return frozenset(idx[:k])


def on_side(name: str, size: int, fraction: float, holdout_seed: int, side: str) -> list[int]:
    """Indices of a pool or template group that split `side` may use.

    eval: the held-out share (`pool_partition`). dev: a second share of the same size carved out of the rest
    (for choosing settings without touching eval); train: what is left. A group too small for a dev share of
    its own (fewer than 3 items) lends dev its train items: dev then shares wording with train, never with eval.
    """
    if side == "all":
        return list(range(size))
    held = pool_partition(name, size, fraction, holdout_seed)
    if side == "eval":
        return [i for i in range(size) if i in held]
    rest = [i for i in range(size) if i not in held]
    dev: set[int] = set()
    if len(rest) >= 2 and fraction > 0:
        k = min(len(rest) - 1, max(1, round(fraction * size)))
        order = list(rest)
        random.Random(f"dev:{holdout_seed}:{name}").shuffle(order)
        dev = set(order[:k])
    if side == "dev":
        return sorted(dev) if dev else rest
    return [i for i in rest if i not in dev]


class Ctx:
    """The per-example sampling toolbox: one seeded rng, today's date, split-aware value pools."""

    def __init__(self, rng: random.Random, today: dt.date, side: str, fraction: float, holdout_seed: int):
        self.rng, self.today, self.side = rng, today, side
        self.fraction, self.holdout_seed = fraction, holdout_seed
        self._parts: dict[str, list] = {}

    def choice(self, seq):
        """A closed set (enums, units, currencies): never split between train and eval."""
        return seq[self.rng.randrange(len(seq))]

    def pick(self, name: str, pool: list):
        """An open pool (cities, people, tickers, ...): train, dev and eval draw from disjoint parts."""
        if self.side == "all":
            return self.choice(pool)
        part = self._parts.get(name)
        if part is None:
            keep = on_side(f"pool:{name}", len(pool), self.fraction, self.holdout_seed, self.side)
            part = [pool[i] for i in keep]
            self._parts[name] = part
        return self.choice(part)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def date(self, lo: int = 1, hi: int = 45) -> tuple[str, str, bool]:
        """(prepositional text, ISO date, needs today's date) for a future day `lo`..`hi` days ahead."""
        r = self.rng
        form = r.randrange(9)
        if form == 0:
            days, text = 1, "tomorrow"
        elif form == 1:
            days, text = 2, "the day after tomorrow"
        elif form == 2:
            days = r.randint(1, 6)  # never 7: "on Friday" said on a Friday is ambiguous
            d = self.today + dt.timedelta(days=days)
            text = f"{r.choice(['on', 'this', 'this coming'])} {d.strftime('%A')}"
        elif form == 3:
            days = r.randint(3, 10)
            text = f"in {days} days"
        else:
            days = r.randint(max(lo, 3), max(hi, 4))
            d = self.today + dt.timedelta(days=days)
            month, day, year = d.strftime("%B"), d.day, d.year
            text = {
                4: f"on {month} {day}, {year}",
                5: f"on {day} {month} {year}",
                6: f"on {d.isoformat()}",
                7: f"on {month} {day}",
                8: f"on the {_ordinal(day)} of {month}",
            }[form]
            iso = d.isoformat()
            return text, iso, form in (7, 8)  # no year: the year comes from today's date
        return text, (self.today + dt.timedelta(days=days)).isoformat(), True


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def join_words(items: list[str], last: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def money(x: float, cur: str = "USD") -> str:
    sym = {"USD": "$", "EUR": "€", "GBP": "£"}.get(cur)
    return f"{sym}{x:,.2f}" if sym else f"{x:,.2f} {cur}"


def nice_date(iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return f"{d.strftime('%A')}, {d.strftime('%B')} {d.day}"


def num(x: float) -> int | float:
    """JSON-friendly number: 12.0 -> 12."""
    return int(x) if float(x).is_integer() else x


NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# ----------------------------------------------------------------------------------------------
# Value pools (open pools are split between train and eval by `Ctx.pick`)

CITIES = [
    "Paris", "Tokyo", "Lisbon", "Nairobi", "Toronto", "Melbourne", "São Paulo", "Reykjavik", "Seoul",
    "Cape Town", "Mumbai", "Berlin", "Madrid", "Chicago", "Denver", "Austin", "Vancouver", "Dublin",
    "Edinburgh", "Oslo", "Stockholm", "Helsinki", "Prague", "Vienna", "Zurich", "Istanbul", "Cairo",
    "Lagos", "Buenos Aires", "Lima", "Mexico City", "Bogotá", "Singapore", "Bangkok", "Hanoi", "Jakarta",
    "Manila", "Sydney", "Auckland", "Montreal", "Seattle", "Boston", "Miami", "New Orleans", "Kyoto",
    "Osaka", "Marrakesh", "Athens", "Rome", "Florence", "Kraków", "Budapest", "Copenhagen", "Amsterdam",
]  # fmt: skip

AIRPORTS = [
    ("Boston", "BOS"), ("New York", "JFK"), ("San Francisco", "SFO"), ("Los Angeles", "LAX"),
    ("Chicago", "ORD"), ("Seattle", "SEA"), ("Denver", "DEN"), ("Miami", "MIA"), ("Atlanta", "ATL"),
    ("Dallas", "DFW"), ("Toronto", "YYZ"), ("Vancouver", "YVR"), ("London", "LHR"), ("Paris", "CDG"),
    ("Amsterdam", "AMS"), ("Frankfurt", "FRA"), ("Madrid", "MAD"), ("Lisbon", "LIS"), ("Rome", "FCO"),
    ("Dublin", "DUB"), ("Zurich", "ZRH"), ("Istanbul", "IST"), ("Dubai", "DXB"), ("Singapore", "SIN"),
    ("Tokyo", "HND"), ("Seoul", "ICN"), ("Sydney", "SYD"), ("Mexico City", "MEX"), ("São Paulo", "GRU"),
    ("Johannesburg", "JNB"), ("Nairobi", "NBO"), ("Bangkok", "BKK"), ("Delhi", "DEL"), ("Hong Kong", "HKG"),
]  # fmt: skip

# (ticker, company, exchange, typical price in USD)
TICKERS = [
    ("AAPL", "Apple", "NASDAQ", 190), ("MSFT", "Microsoft", "NASDAQ", 420), ("GOOGL", "Alphabet", "NASDAQ", 165),
    ("AMZN", "Amazon", "NASDAQ", 180), ("NVDA", "NVIDIA", "NASDAQ", 120), ("TSLA", "Tesla", "NASDAQ", 240),
    ("META", "Meta", "NASDAQ", 500), ("NFLX", "Netflix", "NASDAQ", 640), ("JPM", "JPMorgan Chase", "NYSE", 200),
    ("V", "Visa", "NYSE", 275), ("KO", "Coca-Cola", "NYSE", 62), ("DIS", "Disney", "NYSE", 100),
    ("NKE", "Nike", "NYSE", 90), ("INTC", "Intel", "NASDAQ", 32), ("AMD", "AMD", "NASDAQ", 160),
    ("IBM", "IBM", "NYSE", 185), ("ORCL", "Oracle", "NYSE", 125), ("CRM", "Salesforce", "NYSE", 270),
    ("ADBE", "Adobe", "NASDAQ", 520), ("PYPL", "PayPal", "NASDAQ", 64), ("UBER", "Uber", "NYSE", 70),
    ("SBUX", "Starbucks", "NASDAQ", 80), ("WMT", "Walmart", "NYSE", 68), ("PEP", "PepsiCo", "NASDAQ", 170),
    ("BA", "Boeing", "NYSE", 180), ("XOM", "ExxonMobil", "NYSE", 115), ("PFE", "Pfizer", "NYSE", 28),
    ("SHOP", "Shopify", "NYSE", 75), ("SPOT", "Spotify", "NYSE", 310), ("COST", "Costco", "NASDAQ", 820),
]  # fmt: skip

FIRST = [
    "Anna", "Ben", "Priya", "Marco", "Sofia", "Liam", "Chen", "Fatima", "Diego", "Hannah", "Kenji", "Amara",
    "Lucas", "Zoe", "Omar", "Ingrid", "Mateo", "Aisha", "Noah", "Elena", "Tariq", "Yuki", "Grace", "Pavel",
    "Leila", "Samuel", "Nadia", "Oliver", "Maya", "Jonas",
]  # fmt: skip
LAST = [
    "Shah", "Rossi", "Müller", "Kim", "Okafor", "Novak", "Silva", "Larsen", "Tanaka", "Haddad", "Brennan",
    "Costa", "Nguyen", "Fischer", "Mensah", "Ortiz", "Petrov", "Walsh", "Dubois", "Lindqvist",
]  # fmt: skip
DOMAINS = [
    "example.com",
    "example.org",
    "contoso.com",
    "northwind.io",
    "fabrikam.net",
    "globex.co",
    "acme.dev",
]

EMAIL_TOPICS = [
    ("Running late", "I'm running about 15 minutes late, please start without me."),
    ("Lunch on Friday", "Are we still on for lunch on Friday? Let me know what time works."),
    ("Quarterly report", "The quarterly report is attached to the shared folder. Comments welcome by Thursday."),
    ("Thank you", "Thanks again for your help with the move last weekend!"),
    ("Project kickoff", "The kickoff meeting is confirmed for Monday at 10am in the main conference room."),
    ("Invoice 2231", "Please find invoice 2231 in the portal. Payment is due within 30 days."),
    ("Book club", "This month's book is The Remains of the Day. We meet at my place."),
    ("Out of office", "I'll be out of the office next week with limited access to email."),
    ("Dinner plans", "Would you like to grab dinner on Saturday? I'm thinking Thai food."),
    ("Flight details", "My flight lands at 6:40pm, so I should be at the hotel by 8."),
    ("Draft review", "I've finished the draft. Could you review sections 2 and 3 before Friday?"),
    ("Team offsite", "The offsite is moving to the lake house. Carpool sign-up is in the group chat."),
    ("Rent payment", "I've sent this month's rent. Please confirm when it arrives."),
    ("Happy birthday", "Happy birthday! Hope you have a wonderful day."),
    ("Meeting notes", "Here are the key decisions from today: ship on the 12th, hire two more testers."),
    ("Password reset", "I reset the shared account password. Ask me for the new one in person."),
    ("Soccer practice", "Practice is cancelled tonight because of the rain. See you Saturday."),
    ("Interview follow-up", "Thank you for taking the time to meet with me today. I enjoyed our conversation."),
]  # fmt: skip

SEARCH_QUERIES = [
    "best hiking trails near Denver", "how to repot a monstera", "latest Mars rover discoveries",
    "python asyncio tutorial", "vegan lasagna recipe", "symptoms of vitamin D deficiency",
    "cheap flights to Iceland in winter", "how do heat pumps work", "electric cars with the longest range",
    "history of the Silk Road", "tips for first-time home buyers", "best budget mechanical keyboards",
    "how to remove red wine stains", "marathon training plan for beginners", "new features in Rust 2024 edition",
    "side effects of melatonin", "how to start a vegetable garden", "top rated sci-fi novels of the decade",
    "how to negotiate a salary offer", "solar panel cost per watt", "museums open late in London",
    "how to fix a leaking faucet", "Nobel Prize in Physics winners", "sourdough starter troubleshooting",
    "noise cancelling headphones comparison", "Japanese rail pass prices", "how to improve sleep quality",
    "UEFA Champions League results", "local elections results", "how to learn chess openings",
]  # fmt: skip

RECENCY = {
    "day": ["from the last 24 hours", "from today"],
    "week": ["from the past week", "from the last seven days"],
    "month": ["from the past month", "from the last 30 days"],
    "year": ["from the past year", "from this past year"],
}

LANGUAGES = ["French", "Spanish", "German", "Italian", "Portuguese", "Dutch", "Japanese", "Chinese", "Korean"]  # fmt: skip

# English phrase -> translations the fake executor can return (targets outside the table get no result).
PHRASES = {
    "Where is the train station?": {"French": "Où est la gare ?", "Spanish": "¿Dónde está la estación de tren?", "German": "Wo ist der Bahnhof?", "Italian": "Dov'è la stazione dei treni?"},
    "Thank you for your help.": {"French": "Merci pour votre aide.", "Spanish": "Gracias por su ayuda.", "German": "Danke für Ihre Hilfe.", "Italian": "Grazie per il suo aiuto."},
    "I would like a table for two.": {"French": "Je voudrais une table pour deux.", "Spanish": "Quisiera una mesa para dos.", "German": "Ich hätte gern einen Tisch für zwei.", "Italian": "Vorrei un tavolo per due."},
    "How much does this cost?": {"French": "Combien ça coûte ?", "Spanish": "¿Cuánto cuesta esto?", "German": "Wie viel kostet das?", "Italian": "Quanto costa questo?"},
    "The meeting has been moved to Monday.": {"French": "La réunion a été déplacée à lundi.", "Spanish": "La reunión se ha trasladado al lunes.", "German": "Das Meeting wurde auf Montag verschoben.", "Italian": "La riunione è stata spostata a lunedì."},
    "Can you recommend a good restaurant?": {"French": "Pouvez-vous recommander un bon restaurant ?", "Spanish": "¿Puede recomendar un buen restaurante?", "German": "Können Sie ein gutes Restaurant empfehlen?", "Italian": "Può consigliare un buon ristorante?"},
    "I'm allergic to peanuts.": {"French": "Je suis allergique aux arachides.", "Spanish": "Soy alérgico a los cacahuetes.", "German": "Ich bin allergisch gegen Erdnüsse.", "Italian": "Sono allergico alle arachidi."},
    "Happy birthday!": {"French": "Joyeux anniversaire !", "Spanish": "¡Feliz cumpleaños!", "German": "Alles Gute zum Geburtstag!", "Italian": "Buon compleanno!"},
    "What time does the museum open?": {"French": "À quelle heure ouvre le musée ?", "Spanish": "¿A qué hora abre el museo?", "German": "Wann öffnet das Museum?", "Italian": "A che ora apre il museo?"},
    "Please send me the invoice.": {"French": "Veuillez m'envoyer la facture.", "Spanish": "Por favor, envíeme la factura.", "German": "Bitte senden Sie mir die Rechnung.", "Italian": "Per favore, mi invii la fattura."},
    "The package arrived yesterday.": {"French": "Le colis est arrivé hier.", "Spanish": "El paquete llegó ayer.", "German": "Das Paket ist gestern angekommen.", "Italian": "Il pacco è arrivato ieri."},
    "I'll be ten minutes late.": {"French": "J'aurai dix minutes de retard.", "Spanish": "Llegaré diez minutos tarde.", "German": "Ich komme zehn Minuten zu spät.", "Italian": "Arriverò con dieci minuti di ritardo."},
    "Is breakfast included?": {"French": "Le petit-déjeuner est-il inclus ?", "Spanish": "¿Está incluido el desayuno?", "German": "Ist das Frühstück inbegriffen?", "Italian": "La colazione è inclusa?"},
    "We need to reschedule our call.": {"French": "Nous devons reporter notre appel.", "Spanish": "Tenemos que reprogramar nuestra llamada.", "German": "Wir müssen unser Gespräch verschieben.", "Italian": "Dobbiamo riprogrammare la nostra chiamata."},
}  # fmt: skip
# Foreign phrase -> (its language, English translation)
FOREIGN = [
    ("¿Dónde está el baño?", "Spanish", "Where is the bathroom?"),
    ("Je ne comprends pas.", "French", "I don't understand."),
    ("Wie spät ist es?", "German", "What time is it?"),
    ("Buongiorno, come sta?", "Italian", "Good morning, how are you?"),
    ("Obrigado pela ajuda.", "Portuguese", "Thanks for the help."),
    ("Het spijt me, ik ben te laat.", "Dutch", "I'm sorry, I'm late."),
    ("La cuenta, por favor.", "Spanish", "The bill, please."),
    ("On se voit demain ?", "French", "Shall we meet tomorrow?"),
]

# currency code -> (name, units per USD)
CURRENCIES = {
    "USD": ("US dollars", 1.0), "EUR": ("euros", 0.92), "GBP": ("British pounds", 0.79),
    "JPY": ("Japanese yen", 151.2), "CHF": ("Swiss francs", 0.88), "CAD": ("Canadian dollars", 1.36),
    "AUD": ("Australian dollars", 1.52), "INR": ("Indian rupees", 83.4), "MXN": ("Mexican pesos", 17.1),
    "SEK": ("Swedish kronor", 10.6), "BRL": ("Brazilian reais", 5.05), "CNY": ("Chinese yuan", 7.23),
    "KRW": ("South Korean won", 1345.0), "NZD": ("New Zealand dollars", 1.66), "SGD": ("Singapore dollars", 1.35),
}  # fmt: skip

EVENT_TITLES = [
    "Dentist appointment", "Team standup", "Lunch with Maya", "Quarterly review", "Yoga class",
    "Call with the landlord", "Parent-teacher meeting", "Budget planning", "Haircut", "Design review",
    "Coffee with Jonas", "Car service", "Piano lesson", "1:1 with my manager", "Book club", "Vet visit",
    "Sprint retrospective", "Gym session", "Dinner with the Okafors", "Tax prep",
]  # fmt: skip
EVENT_PLACES = ["Room 4B", "the main conference room", "Blue Bottle Coffee", "the downtown office",
                "Zoom", "the community center", "Café Lumière", "the library"]  # fmt: skip

CONDITIONS = ["sunny", "partly cloudy", "cloudy", "overcast", "rainy", "drizzly", "snowy", "foggy", "windy",
              "stormy", "clear"]  # fmt: skip

PRODUCTS = [
    "Aero 2 wireless earbuds", "TrailRunner 5 running shoes", "Lumo standing desk", "Barista Pro espresso machine",
    "Cloud yoga mat", "Nimbus rain jacket", "Atlas 40L backpack", "Pixel frame smart display",
    "Glide electric toothbrush", "Summit trekking poles", "Halo desk lamp", "Orbit robot vacuum",
    "Ember cast-iron skillet", "Drift memory-foam pillow", "Volt USB-C charger", "Echo bamboo cutting board",
]  # fmt: skip

ISSUES = [
    "a double charge on my credit card", "a warranty claim for a blender that stopped working",
    "a package marked delivered that I never received", "being billed after I cancelled my subscription",
    "a promo code that was not applied at checkout", "my account being locked after a password reset",
    "a return label that does not work", "a gift card balance that disappeared",
    "an item that is missing from my delivery", "a price match request", "repeated delivery delays on my orders",
    "a refund that has not shown up after two weeks",
]  # fmt: skip

DISCOUNT_CODES = ["SPRING20", "WELCOME10", "FREESHIP", "VIP2026", "SAVE15", "BDAY25", "LOYAL5", "FLASH30",
                  "STUDENT10", "HOLIDAY40"]  # fmt: skip

# (street, city, postal code, country code, country name)
ADDRESSES = [
    ("742 Evergreen Terrace", "Springfield", "62704", "US", "USA"),
    ("1600 Larkin Street", "San Francisco", "94109", "US", "USA"),
    ("88 Queen Street West", "Toronto", "M5H 2N2", "CA", "Canada"),
    ("221B Baker Street", "London", "NW1 6XE", "GB", "United Kingdom"),
    ("Hauptstraße 5", "Berlin", "10115", "DE", "Germany"),
    ("12 Rue de Rivoli", "Paris", "75004", "FR", "France"),
    ("Calle de Alcalá 48", "Madrid", "28014", "ES", "Spain"),
    ("Via Roma 17", "Milan", "20121", "IT", "Italy"),
    ("Keizersgracht 123", "Amsterdam", "1015 CJ", "NL", "the Netherlands"),
    ("45 George Street", "Sydney", "2000", "AU", "Australia"),
    ("3-1 Marunouchi", "Tokyo", "100-0005", "JP", "Japan"),
    ("500 Pine Avenue", "Portland", "97205", "US", "USA"),
    ("9 Harbour Road", "Dublin", "D02 X285", "IE", "Ireland"),
    ("Storgatan 14", "Stockholm", "111 51", "SE", "Sweden"),
]  # fmt: skip

CARRIERS = {"ups": "UPS", "fedex": "FedEx", "dhl": "DHL", "usps": "USPS"}
ZIPS = [
    "94107",
    "10001",
    "60614",
    "73301",
    "98101",
    "02139",
    "30309",
    "80202",
    "33131",
    "97205",
    "55401",
    "19103",
]

REFUND_REASONS = {
    "damaged": (["it arrived damaged", "the box was crushed and the item inside is cracked", "it came broken"],
                ["damaged item", "arrived damaged"]),
    "defective": (["it stopped working after two days", "it won't turn on", "it's defective"],
                  ["defective product", "faulty item"]),
    "wrong_item": (["I received the wrong item", "you sent me a different model than I ordered",
                    "the wrong product was in the box"], ["wrong item", "wrong product sent"]),
    "not_received": (["it never arrived", "I never got the package", "the parcel never showed up"],
                     ["never received", "item not received"]),
    "late_delivery": (["it showed up two weeks late", "it arrived way after the promised date"],
                      ["late delivery", "arrived late"]),
    "changed_mind": (["I changed my mind", "I decided I don't want it after all"], ["change of mind", "changed my mind"]),
}  # fmt: skip

CANCEL_REASONS = {
    "ordered_by_mistake": ["I ordered it by mistake", "I placed it by accident"],
    "found_cheaper": ["I found it cheaper elsewhere", "I found a better price somewhere else"],
    "too_slow": ["delivery is taking too long", "the shipping time is too long"],
    "no_longer_needed": ["I don't need it anymore", "I no longer need it"],
}

# ----------------------------------------------------------------------------------------------
# Intents: one per shipped tool


@dataclass
class Intent:
    tool: str
    capability: str  # "check the weather": for declines ("I can't ...") and "what can you do"
    sample: Callable[[Ctx], dict[str, Slot]]
    templates: list[str]
    execute: Callable[[Ctx, dict], dict | None]  # fake result; None: no plausible result (no result turn)
    summarize: Callable[[Ctx, dict, dict], str]  # one sentence using the result
    parallel: list[str] = field(default_factory=list)  # same-tool parallel templates ({slot.k})


def _email(c: Ctx) -> tuple[str, str]:
    first, last = c.pick("first", FIRST), c.pick("last", LAST)
    dom = c.pick("domains", DOMAINS)
    a, b = _ascii(first).lower(), _ascii(last).lower()
    local = c.choice([f"{a}.{b}", f"{a[0]}{b}", f"{a}{c.rng.randint(2, 99)}", f"{a}_{b}", a])
    return first, f"{local}@{dom}"


def _ascii(s: str) -> str:
    return s.translate(str.maketrans("äöüéáíóúñçãå", "aoueaiounca" + "a"))


def _recipients(c: Ctx, k: int) -> tuple[str, list[str]]:
    people = []
    while len(people) < k:
        p = _email(c)
        if p[1] not in [q[1] for q in people]:
            people.append(p)
    named = c.chance(0.4)
    texts = [f"{n} ({e})" if named else e for n, e in people]
    return join_words(texts), [e for _, e in people]


# --- get_weather
UNIT_TEXT = {
    "celsius": ["in Celsius", "in °C", "in degrees Celsius"],
    "fahrenheit": ["in Fahrenheit", "in °F", "in degrees Fahrenheit"],
}


def _s_weather(c: Ctx) -> dict[str, Slot]:
    city = c.pick("cities", CITIES)
    u = c.choice(["celsius", "fahrenheit"])
    when, iso, rel = c.date(1, 10)
    return {"city": S(city, "location", city), "units": S(c.choice(UNIT_TEXT[u]), "units", u),
            "when": S(when, "date", iso, rel)}  # fmt: skip


def _x_weather(c: Ctx, a: dict) -> dict:
    units = a.get("units", "celsius")
    t = c.rng.randint(-5, 34)
    out: dict[str, Any] = {"location": a["location"]}
    if "date" in a:
        out["date"] = a["date"]
    out["temperature"] = t if units == "celsius" else round(t * 9 / 5 + 32)
    out.update({"units": units, "condition": c.choice(CONDITIONS), "humidity": c.rng.randint(20, 95)})
    return out


def _m_weather(c: Ctx, a: dict, r: dict) -> str:
    deg = "°F" if r["units"] == "fahrenheit" else "°C"
    t, cond, loc = r["temperature"], r["condition"], r["location"]
    if "date" in r:
        day = nice_date(r["date"])
        return c.choice([f"The forecast for {loc} on {day}: {cond}, around {t}{deg}.",
                         f"{loc} on {day} looks {cond}, with temperatures around {t}{deg}.",
                         f"Expect {cond} weather in {loc} on {day}, about {t}{deg} (humidity {r['humidity']}%)."])  # fmt: skip
    return c.choice([f"It's currently {t}{deg} and {cond} in {loc}.",
                     f"Right now {loc} is {cond} at {t}{deg}, with {r['humidity']}% humidity.",
                     f"{loc}: {cond}, {t}{deg}."])  # fmt: skip


WEATHER = Intent(
    "get_weather", "check the weather", _s_weather,
    [
        "What's the weather like in {city}[ {when}]?",
        "Can you check the forecast for {city} {when}[, {units}]?",
        "<Is it going to|Will it> rain in {city} {when}?",
        "How <warm|cold> is it in {city} right now[, {units}]?",
        "{city} weather[ {when}], please[ — {units}].",
        "I'm heading to {city}[ {when}]. What weather should I expect?",
        "Tell me the current temperature in {city}[ {units}].",
        "Could you look up the weather for {city}[ {when}][ and give me the temperature {units}]?",
        "Do I need an umbrella in {city} {when}?",
        "Give me the weather report for {city}[ {when}].",
        "What are the conditions in {city} at the moment?",
        "<Hey, what's|What's> the forecast <looking like|like> for {city} {when}?",
    ],
    _x_weather, _m_weather,
    parallel=[
        "What's the weather in {city.1} and {city.2}[ {when}]?",
        "Compare the weather in {city.1}, {city.2} and {city.3}[ {when}].",
        "Check the temperature in {city.1} and in {city.2}[, {units}].",
        "I'm choosing between {city.1} and {city.2}. What's the forecast for each {when}?",
    ],
)  # fmt: skip


# --- search_web
def _s_search(c: Ctx) -> dict[str, Slot]:
    q = c.pick("queries", SEARCH_QUERIES)
    k = c.choice([3, 5, 5, 10, 2, 4])
    rec = c.choice(list(RECENCY))
    ktext = c.choice([f"{k} results", f"the top {k} results", f"{k} links"])
    return {"query": S(q, "query", q), "num": S(ktext, "num_results", k),
            "recency": S(c.choice(RECENCY[rec]), "recency", rec)}  # fmt: skip


def _x_search(c: Ctx, a: dict) -> dict:
    q = a["query"]
    k = min(a.get("num_results", 3), 3)  # keep results short: tokens
    sites = ["en.wikipedia.org/wiki", "www.nytimes.com", "www.reddit.com/r", "medium.com", "www.bbc.com/news"]
    slug = "-".join(q.lower().split()[:5])
    res = [{"title": f"{q[:1].upper() + q[1:]}{c.choice([' - Wikipedia', ': a complete guide', ' explained', ' (2026)'])}",
            "url": f"https://{c.choice(sites)}/{slug}"} for _ in range(k)]  # fmt: skip
    return {"query": q, "results": res}


def _m_search(c: Ctx, a: dict, r: dict) -> str:
    top = r["results"][0]
    return c.choice([f"I found {len(r['results'])} results for \u201c{a['query']}\u201d. The top one is \u201c{top['title']}\u201d ({top['url']}).",
                     f"Top result for \u201c{a['query']}\u201d: {top['title']} — {top['url']}."])  # fmt: skip


SEARCH = Intent(
    "search_web", "search the web", _s_search,
    [
        "Search the web for {query}[ and show me {num}].",
        "Can you look up {query} online[, {recency}]?",
        "Do a quick web search on {query}[ and give me {num}].",
        "Find me {num} about {query}[ {recency}].",
        "I need recent info on {query} — search for results {recency}.",
        "What does the internet say about {query}?",
        "Run a web search: {query}[. Limit it to {num}].",
        "Please search online for \"{query}\"[ {recency}].",
        "Look up {query} on the web[ and return {num}].",
        "Check the web for news about {query}[ {recency}].",
    ],
    _x_search, _m_search,
    parallel=[
        "Search for {query.1} and also for {query.2}.",
        "Run two web searches: \"{query.1}\" and \"{query.2}\".",
    ],
)  # fmt: skip


# --- send_email
PRIORITY_TEXT = {"high": ["high priority", "urgent"], "low": ["low priority"]}


def _s_email(c: Ctx) -> dict[str, Slot]:
    to_text, to = _recipients(c, 1 if c.chance(0.8) else 2)
    cc_text, cc = _recipients(c, 1)
    subject, body = c.pick("email_topics", EMAIL_TOPICS)
    pr = c.choice(list(PRIORITY_TEXT))
    return {"to": S(to_text, "to", to), "cc": S(cc_text, "cc", cc), "subject": S(subject, "subject", subject),
            "body": S(body, "body", body), "priority": S(c.choice(PRIORITY_TEXT[pr]), "priority", pr)}  # fmt: skip


def _x_email(c: Ctx, a: dict) -> dict:
    mid = "".join(c.choice("0123456789abcdef") for _ in range(10))
    return {"status": "sent", "message_id": f"msg_{mid}", "to": a["to"]}


def _m_email(c: Ctx, a: dict, r: dict) -> str:
    who = join_words(a["to"])
    return c.choice([f"Done — your email \u201c{a['subject']}\u201d has been sent to {who}.",
                     f"I've sent the email to {who}.", f"Sent! {who} should have your message shortly."])  # fmt: skip


EMAIL = Intent(
    "send_email", "send emails", _s_email,
    [
        "Send an email to {to} with the subject \"{subject}\" saying: {body}",
        "Email {to}[ and cc {cc}]. Subject: {subject}. Message: {body}",
        "Can you write to {to}? Use the subject line \"{subject}\" and say \"{body}\"",
        "Please send {to} a message titled \"{subject}\": \"{body}\"[ Mark it {priority}.]",
        "Shoot an email over to {to}[, copying {cc}], subject \"{subject}\", body: {body}",
        "I need to email {to}. The subject is \"{subject}\" and the body should read: {body}",
        "Draft and send an email — to: {to}; subject: {subject}[; {priority}]; text: {body}",
        "Send {to} the following email. Subject: {subject}. Body: {body}",
        "Mail {to} with subject \"{subject}\"[ (cc {cc})]. Write: {body}",
        "<Could you|Would you> email {to} for me? Subject \"{subject}\", message \"{body}\"[, {priority}].",
    ],
    _x_email, _m_email,
)  # fmt: skip


# --- get_stock_price
def _s_stock(c: Ctx) -> dict[str, Slot]:
    t, name, ex, _ = c.pick("tickers", TICKERS)
    text = t if c.chance(0.6) else f"{name} ({t})"
    return {"ticker": S(text, "ticker", t), "tk": S(t, "ticker", t),
            "exchange": S(c.choice([f"on the {ex}", f"on {ex}"]), "exchange", ex)}  # fmt: skip


def _price(c: Ctx, ticker: str) -> float:
    base = next((p for t, _, _, p in TICKERS if t == ticker), 100)
    return round(base * c.rng.uniform(0.85, 1.15), 2)


def _x_stock(c: Ctx, a: dict) -> dict:
    return {"ticker": a["ticker"], "price": _price(c, a["ticker"]), "currency": "USD",
            "change_percent": round(c.rng.uniform(-3.5, 3.5), 2)}  # fmt: skip


def _m_stock(c: Ctx, a: dict, r: dict) -> str:
    ch = r["change_percent"]
    move = f"{'up' if ch >= 0 else 'down'} {abs(ch):.2f}% today"
    return c.choice([f"{r['ticker']} is trading at {money(r['price'])}, {move}.",
                     f"The latest price for {r['ticker']} is {money(r['price'])} ({ch:+.2f}% on the day)."])  # fmt: skip


STOCK = Intent(
    "get_stock_price", "look up stock prices", _s_stock,
    [
        "What's the current price of {ticker}[ {exchange}]?",
        "How is {ticker} trading today?",
        "Get me a stock quote for {ticker}[ {exchange}].",
        "Check {tk}'s share price, please.",
        "Where is {ticker} at right now?",
        "I'd like to know the latest price for {ticker} shares[ {exchange}].",
        "Quote for {tk}?",
        "Pull up the stock price of {ticker}.",
        "How much does one share of {ticker} cost at the moment?",
        "Can you look up {tk} stock[ {exchange}]?",
    ],
    _x_stock, _m_stock,
    parallel=[
        "How are {tk.1} and {tk.2} doing today?",
        "Get quotes for {tk.1}, {tk.2} and {tk.3}.",
        "Compare the share prices of {ticker.1} and {ticker.2}.",
        "Prices for {tk.1} and {tk.2}, please.",
    ],
)  # fmt: skip


# --- translate_text
FORMALITY_TEXT = {"formal": ["formally", "in a formal register"], "informal": ["informally", "casually"]}


def _s_translate(c: Ctx) -> dict[str, Slot]:
    if c.chance(0.8):
        text = c.pick("phrases", list(PHRASES))
        src = "English"
        target = c.choice(list(PHRASES[text])) if c.chance(0.6) else c.choice(LANGUAGES)
    else:
        text, src, _ = c.pick("foreign", FOREIGN)
        target = "English"
    form = c.choice(["formal", "informal"])
    return {"text": S(text, "text", text), "target": S(target, "target_language", target),
            "source": S(f"from {src}", "source_language", src),
            "formality": S(c.choice(FORMALITY_TEXT[form]), "formality", form),
            "formality_adj": S(form, "formality", form)}  # fmt: skip


def _x_translate(c: Ctx, a: dict) -> dict | None:
    text, target = a["text"], a["target_language"]
    if text in PHRASES:
        out = PHRASES[text].get(target)
    else:
        out = next((e for f, _, e in FOREIGN if f == text and target == "English"), None)
    if out is None:
        return None
    return {"translated_text": out, "target_language": target}


def _m_translate(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"In {r['target_language']}: \u201c{r['translated_text']}\u201d",
                     f"\u201c{a['text']}\u201d in {r['target_language']} is \u201c{r['translated_text']}\u201d."])  # fmt: skip


TRANSLATE = Intent(
    "translate_text", "translate text", _s_translate,
    [
        "Translate \"{text}\" into {target}[ {formality}].",
        "How do you say \"{text}\" in {target}?",
        "Can you translate this[ {source}] to {target}: {text}",
        "What's \"{text}\" in {target}?",
        "Please put \"{text}\" into {target}[, {formality}].",
        "I need a {target} translation of: \"{text}\"",
        "Translate to {target}[ {source}]: \"{text}\"",
        "Help me say \"{text}\" in {target}[ — keep it {formality_adj}].",
        "Could you render \"{text}\" in {target}?",
    ],
    _x_translate, _m_translate,
    parallel=[
        "Translate \"{text}\" into {target.1} and {target.2}.",
        "How do you say \"{text}\" in {target.1}, {target.2} and {target.3}?",
    ],
)  # fmt: skip


# --- calculate
WORD_OPS = {
    "+": ["plus", "added to"],
    "-": ["minus"],
    "*": ["times", "multiplied by"],
    "/": ["divided by", "over"],
}


def _operand(c: Ctx) -> str:
    return str(c.rng.randint(2, 999)) if c.chance(0.7) else f"{c.rng.randint(1, 99)}.{c.rng.randint(1, 9)}"


def _s_calc(c: Ctx) -> dict[str, Slot]:
    a, b, d = _operand(c), _operand(c), _operand(c)
    op, op2 = c.choice("+-*/"), c.choice("+-*/")
    form = c.rng.randrange(4)
    if form == 0:
        expr, text = f"{a} {op} {b}", f"{a} {op} {b}"
    elif form == 1:
        expr, text = f"{a} {op} {b}", f"{a} {c.choice(WORD_OPS[op])} {b}"
    elif form == 2:
        expr = text = f"({a} {op} {b}) {op2} {d}"
    else:
        expr = text = f"{a} {op} {b} {op2} {d}"
    p = c.choice([0, 1, 2, 2, 3])
    ptext = (
        c.choice([f"rounded to {p} decimal places", f"to {p} decimal places"])
        if p
        else "rounded to a whole number"
    )
    return {"expr": S(text, "expression", expr), "precision": S(ptext, "precision", p)}


def evaluate_expression(expr: str) -> float:
    """Arithmetic only (+ - * / parentheses): the fake `calculate` executor; no `eval`."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
            return n.value
        raise ValueError(f"not arithmetic: {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def _x_calc(c: Ctx, a: dict) -> dict:
    v = evaluate_expression(a["expression"])
    return {"expression": a["expression"], "result": num(round(v, a.get("precision", 4)))}


def _m_calc(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"{a['expression']} = {r['result']}.", f"The result is {r['result']}.",
                     f"That comes to {r['result']}."])  # fmt: skip


CALC = Intent(
    "calculate", "do calculations", _s_calc,
    [
        "What is {expr}?",
        "Calculate {expr}[, {precision}].",
        "Can you work out {expr} for me[, {precision}]?",
        "Quick math: {expr}. What's the answer?",
        "I need the result of {expr}[ {precision}].",
        "Compute {expr}[ and give me the answer {precision}].",
        "Help me figure out {expr}.",
        "What do you get if you evaluate {expr}[, {precision}]?",
        "Please solve {expr}.",
    ],
    _x_calc, _m_calc,
    parallel=["Work out {expr.1} and {expr.2}.", "Two calculations, please: {expr.1}, and {expr.2}."],
)  # fmt: skip


# --- book_flight
CABIN_TEXT = {
    "economy": (["in economy"], "economy"),
    "premium_economy": (["in premium economy"], "premium-economy"),
    "business": (["in business class", "in business"], "business-class"),
    "first": (["in first class"], "first-class"),
}


def _airport_text(c: Ctx, city: str, code: str) -> str:
    return code if c.chance(0.4) else f"{city} ({code})"


def _pax(c: Ctx) -> tuple[str, dict]:
    adults = c.choice([1, 2, 2, 3, 4])
    children = c.choice([0, 0, 1, 2])
    word = (lambda k: NUMBER_WORDS[k]) if c.chance(0.5) else str
    text = f"for {word(adults)} adult{'s' if adults > 1 else ''}"
    value = {"adults": adults}
    if children:
        text += f" and {word(children)} child{'ren' if children > 1 else ''}"
        value["children"] = children
    return text, value


def _s_flight(c: Ctx) -> dict[str, Slot]:
    (oc, o), (dc, d) = c.pick("airports", AIRPORTS), c.pick("airports", AIRPORTS)
    while d == o:
        dc, d = c.pick("airports", AIRPORTS)
    dep_text, dep, rel = c.date(3, 60)
    back = dt.date.fromisoformat(dep) + dt.timedelta(days=c.rng.randint(2, 14))
    ret_text = c.choice([f"on {back.strftime('%B')} {back.day}, {back.year}", f"on {back.isoformat()}",
                         f"on {back.day} {back.strftime('%B')} {back.year}"])  # fmt: skip
    pax_text, pax = _pax(c)
    cabin = c.choice(list(CABIN_TEXT))
    return {"origin": S(_airport_text(c, oc, o), "origin", o), "dest": S(_airport_text(c, dc, d), "destination", d),
            "depart": S(dep_text, "departure_date", dep, rel), "ret": S(ret_text, "return_date", back.isoformat()),
            "pax": S(pax_text, "passengers", pax), "cabin": S(c.choice(CABIN_TEXT[cabin][0]), "cabin", cabin),
            "cabin_adj": S(CABIN_TEXT[cabin][1], "cabin", cabin)}  # fmt: skip


def _x_flight(c: Ctx, a: dict) -> dict:
    ref = "".join(c.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))
    pax = a.get("passengers", {"adults": 1})
    seats = pax["adults"] + pax.get("children", 0)
    mult = {"economy": 1, "premium_economy": 1.6, "business": 3.2, "first": 5.0}[a.get("cabin", "economy")]
    price = round(c.rng.uniform(180, 900) * mult * seats * (1.8 if "return_date" in a else 1), 2)
    return {"status": "confirmed", "booking_reference": ref, "origin": a["origin"], "destination": a["destination"],
            "departure_date": a["departure_date"], "total_price": price, "currency": "USD"}  # fmt: skip


def _m_flight(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"You're booked: {r['origin']} → {r['destination']} on {nice_date(r['departure_date'])}. "
                     f"Confirmation {r['booking_reference']}, total {money(r['total_price'])}.",
                     f"Booking confirmed ({r['booking_reference']}) for {money(r['total_price'])}, departing "
                     f"{r['origin']} on {nice_date(r['departure_date'])}."])  # fmt: skip


FLIGHT = Intent(
    "book_flight", "book flights", _s_flight,
    [
        "Book a flight from {origin} to {dest} {depart}[ returning {ret}][ {pax}][ {cabin}].",
        "I need to fly {origin} to {dest} {depart}[, {cabin}].",
        "Can you get me a ticket to {dest} from {origin}, leaving {depart}[ and coming back {ret}]?",
        "Find and book me a {cabin_adj} flight from {origin} to {dest} {depart}.",
        "{origin} to {dest}, departing {depart}[, return {ret}][, {pax}]. Please book it.",
        "We're travelling from {origin} to {dest} {depart}[ {pax}]. Book the flight, please.",
        "Book me on a flight to {dest} {depart}, flying out of {origin}[ {cabin}].",
        "I want a round trip between {origin} and {dest}: out {depart}, back {ret}[, {pax}].",
        "Get me from {origin} to {dest} {depart}[, returning {ret}], please.",
        "Please reserve a flight {pax} from {origin} to {dest} {depart}[ {cabin}].",
    ],
    _x_flight, _m_flight,
)  # fmt: skip


# --- convert_currency
def _amount(c: Ctx) -> tuple[str, float]:
    v = c.choice([c.rng.randint(5, 500), c.rng.randint(500, 20000), round(c.rng.uniform(1, 2000), 2)])
    if isinstance(v, float) and c.chance(0.5):
        return f"{v:,.2f}", v
    return (f"{v:,}" if isinstance(v, int) and c.chance(0.5) else str(v)), v


def _cur_text(c: Ctx, code: str) -> str:
    return code if c.chance(0.6) else CURRENCIES[code][0]


def _s_convert(c: Ctx) -> dict[str, Slot]:
    codes = list(CURRENCIES)
    f, t = c.choice(codes), c.choice(codes)
    while t == f:
        t = c.choice(codes)
    atext, amount = _amount(c)
    return {"amount": S(atext, "amount", amount), "from": S(_cur_text(c, f), "from_currency", f),
            "to": S(_cur_text(c, t), "to_currency", t)}  # fmt: skip


def _x_convert(c: Ctx, a: dict) -> dict:
    rate = CURRENCIES[a["to_currency"]][1] / CURRENCIES[a["from_currency"]][1]
    rate = round(rate * c.rng.uniform(0.99, 1.01), 4)
    return {"amount": a["amount"], "from_currency": a["from_currency"], "to_currency": a["to_currency"],
            "rate": rate, "converted_amount": round(a["amount"] * rate, 2)}  # fmt: skip


def _m_convert(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"{r['amount']:,} {r['from_currency']} is about {r['converted_amount']:,.2f} {r['to_currency']} "
                     f"(rate {r['rate']}).",
                     f"At today's rate of {r['rate']}, that's {r['converted_amount']:,.2f} {r['to_currency']}."])  # fmt: skip


CONVERT = Intent(
    "convert_currency", "convert currencies", _s_convert,
    [
        "Convert {amount} {from} to {to}.",
        "How much is {amount} {from} in {to}?",
        "What would {amount} {from} be worth in {to}?",
        "I have {amount} {from}. How much is that in {to}?",
        "Exchange check: {amount} {from} into {to}, please.",
        "Can you convert {amount} {from} into {to} for me?",
        "Please tell me what {amount} {from} comes to in {to}.",
        "{amount} {from} to {to}?",
        "If I swap {amount} {from} for {to}, how much do I get?",
    ],
    _x_convert, _m_convert,
    parallel=["Convert {amount} {from} to {to.1} and to {to.2}.",
              "How much is {amount} {from} in {to.1}, {to.2} and {to.3}?"],
)  # fmt: skip


# --- create_calendar_event
def _time(c: Ctx) -> tuple[str, str]:
    h, m = c.rng.randint(7, 20), c.choice([0, 0, 0, 15, 30, 30, 45])
    hh = h % 12 or 12
    ap = "am" if h < 12 else "pm"
    text = c.choice(
        [f"at {hh}{f':{m:02d}' if m else ''} {ap}", f"at {h:02d}:{m:02d}", f"at {hh}:{m:02d}{ap}"]
    )
    if h == 12 and m == 0 and c.chance(0.5):
        text = "at noon"
    return text, f"{h:02d}:{m:02d}"


def _duration(c: Ctx) -> tuple[str, int]:
    mins = c.choice([15, 30, 45, 60, 90, 120, 180])
    text = {60: c.choice(["for an hour", "for 1 hour", "for 60 minutes"]), 90: "for an hour and a half",
            120: "for 2 hours", 180: "for three hours"}.get(mins, f"for {mins} minutes")  # fmt: skip
    return text, mins


def _s_event(c: Ctx) -> dict[str, Slot]:
    title = c.pick("event_titles", EVENT_TITLES)
    dtext, iso, rel = c.date(1, 30)
    ttext, t = _time(c)
    dur_text, dur = _duration(c)
    att_text, att = _recipients(c, c.choice([1, 2]))
    place = c.pick("places", EVENT_PLACES)
    return {"title": S(title, "title", title), "date": S(dtext, "date", iso, rel), "time": S(ttext, "start_time", t),
            "duration": S(dur_text, "duration_minutes", dur), "attendees": S(att_text, "attendees", att),
            "location": S(f"{c.choice(['at', 'in'])} {place}", "location", place)}  # fmt: skip


def _x_event(c: Ctx, a: dict) -> dict:
    eid = "".join(c.choice("0123456789abcdef") for _ in range(8))
    return {
        "status": "created",
        "event_id": f"evt_{eid}",
        "title": a["title"],
        "date": a["date"],
        "start_time": a["start_time"],
    }


def _m_event(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"I've added \u201c{r['title']}\u201d to your calendar on {nice_date(r['date'])} at {r['start_time']}.",
                     f"Done — \u201c{r['title']}\u201d is on your calendar for {nice_date(r['date'])}, {r['start_time']}."])  # fmt: skip


EVENT = Intent(
    "create_calendar_event", "add events to your calendar", _s_event,
    [
        "Add \"{title}\" to my calendar {date} {time}[ {duration}].",
        "Schedule \"{title}\" {date} {time}[ {location}][ and invite {attendees}].",
        "Create an event called \"{title}\" {date} {time}[, {duration}][, {location}].",
        "Can you block off {date} {time} for \"{title}\"[ {duration}]?",
        "New calendar entry: {title}, {date} {time}[, {duration}][, with {attendees}].",
        "Please set up \"{title}\" {date} {time}[ {location}] and invite {attendees}.",
        "I have \"{title}\" {date} {time}[ {duration}] — add it to my calendar.",
        "Put \"{title}\" in my calendar {date} {time}[ {location}].",
        "Calendar: \"{title}\" {date} {time}[ {duration}][; attendees: {attendees}].",
    ],
    _x_event, _m_event,
)  # fmt: skip


# ---------------------------------------------------------------------------- customer service
def _order_id(c: Ctx) -> str:
    return f"ORD-{c.rng.randint(100000, 999999)}"


def _tracking(c: Ctx, carrier: str) -> str:
    r = c.rng
    if carrier == "ups":
        return "1Z" + "".join(r.choice("0123456789ABCDEFGHJKLMNPRSTVWXYZ") for _ in range(16))
    if carrier == "fedex":
        return "".join(r.choice("0123456789") for _ in range(12))
    if carrier == "dhl":
        return "".join(r.choice("0123456789") for _ in range(10))
    return "9400" + "".join(r.choice("0123456789") for _ in range(18))


ITEMS = ["USB-C cable", "phone case", "water bottle", "wool socks (3 pack)", "notebook set", "desk lamp",
         "wireless mouse", "coffee beans 1kg", "travel adapter", "yoga block"]  # fmt: skip


def _order_record(c: Ctx, order_id: str, status: str | None = None, items: bool = False) -> dict:
    status = status or c.choice(["processing", "shipped", "delivered", "delivered"])
    out: dict[str, Any] = {"order_id": order_id, "status": status,
                           "total": round(c.rng.uniform(12, 480), 2), "currency": "USD"}  # fmt: skip
    if status in ("shipped", "delivered"):
        carrier = c.choice(list(CARRIERS))
        out.update({"carrier": carrier, "tracking_number": _tracking(c, carrier)})
    d = c.today + dt.timedelta(days=c.rng.randint(1, 6) * (1 if status != "delivered" else -1))
    out["delivered_on" if status == "delivered" else "estimated_delivery"] = d.isoformat()
    if items:
        out["items"] = [c.choice(ITEMS) for _ in range(c.rng.randint(1, 3))]
    return out


def _s_order(c: Ctx) -> dict[str, Slot]:
    o = _order_id(c)
    return {"order": S(o, "order_id", o),
            "items": S(c.choice(["including the items", "along with the item list", "with the items in it"]),
                       "include_items", True)}  # fmt: skip


def _x_order(c: Ctx, a: dict) -> dict:
    return _order_record(c, a["order_id"], items=bool(a.get("include_items")))


def _m_order(c: Ctx, a: dict, r: dict) -> str:
    s = r["status"]
    tail = ""
    if "items" in r:
        tail = f" It contains: {join_words(r['items'])}."
    if s == "processing":
        head = f"Order {r['order_id']} is still being processed and should arrive by {nice_date(r['estimated_delivery'])}."
    elif s == "shipped":
        head = (f"Order {r['order_id']} has shipped with {CARRIERS[r['carrier']]} (tracking {r['tracking_number']}) "
                f"and is expected {nice_date(r['estimated_delivery'])}.")  # fmt: skip
    else:
        head = f"Order {r['order_id']} was delivered on {nice_date(r['delivered_on'])}."
    return head + tail


ORDER = Intent(
    "check_order_status", "check order statuses", _s_order,
    [
        "What's the status of order {order}?",
        "Can you check on my order {order}[ {items}]?",
        "Where is my order? The number is {order}.",
        "Has order {order} shipped yet?",
        "I placed order {order} last week — any update?",
        "Status check for {order}[ {items}], please.",
        "Could you look up order {order} for me[ {items}]?",
        "My order number is {order}. What's going on with it?",
        "Order {order}: has it been processed?",
        "Check order {order}[ {items}].",
    ],
    _x_order, _m_order,
    parallel=["Can you check orders {order.1} and {order.2}?", "What's the status of {order.1}, {order.2} and {order.3}?"],
)  # fmt: skip


# --- submit_refund
def _s_refund(c: Ctx) -> dict[str, Slot]:
    o = _order_id(c)
    reason = c.choice(list(REFUND_REASONS))
    clauses, nouns = REFUND_REASONS[reason]
    amt = round(c.rng.uniform(5, 300), 2)
    return {"order": S(o, "order_id", o), "reason": S(c.choice(clauses), "reason", reason),
            "reason_noun": S(c.choice(nouns), "reason", reason),
            "amount": S(c.choice([f"${amt:,.2f}", f"{amt:.2f} dollars"]), "amount", amt)}  # fmt: skip


def _x_refund(c: Ctx, a: dict) -> dict:
    amount = a.get("amount", round(c.rng.uniform(12, 480), 2))
    return {"status": "approved", "refund_id": f"RF-{c.rng.randint(10000, 99999)}", "order_id": a["order_id"],
            "amount": amount, "currency": "USD", "eta_business_days": c.choice([3, 5, 7])}  # fmt: skip


def _m_refund(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"Your refund of {money(r['amount'])} for order {r['order_id']} is approved (reference {r['refund_id']}). "
                     f"It should reach you within {r['eta_business_days']} business days.",
                     f"Done — refund {r['refund_id']} for {money(r['amount'])} has been submitted; expect it in about "
                     f"{r['eta_business_days']} business days."])  # fmt: skip


REFUND = Intent(
    "submit_refund", "issue refunds", _s_refund,
    [
        "I want a refund for order {order} because {reason}.",
        "Please refund {order}[ ({amount})] — {reason}.",
        "{^reason}. Order {order}. I'd like a refund[ of {amount}].",
        "Can I get my money back for order {order}? {^reason}.",
        "Refund request: order {order}, reason: {reason_noun}[, amount {amount}].",
        "Order {order} — {reason}. Please process a refund[ for {amount}].",
        "I'd like to return order {order} for a refund since {reason}.",
        "Submit a refund for {order}: {reason_noun}[, {amount}].",
        "{^reason}, so I need a refund on {order}[ — {amount} should cover it].",
        "Could you refund me[ {amount}] for order {order}? {^reason}.",
    ],
    _x_refund, _m_refund,
)  # fmt: skip


# --- escalate_to_human
DEPT_TEXT = {"billing": ["billing"], "technical": ["technical support", "tech support"], "shipping": ["shipping"],
             "returns": ["returns"]}  # fmt: skip
PRIO_TEXT = {"urgent": ["it's urgent", "this is urgent"], "low": ["no rush", "it's not urgent"]}


def _s_escalate(c: Ctx) -> dict[str, Slot]:
    issue = c.pick("issues", ISSUES)
    cap = issue[:1].upper() + issue[1:]  # opening a sentence: the summary argument stays word for word
    dept, prio = c.choice(list(DEPT_TEXT)), c.choice(list(PRIO_TEXT))
    return {
        "issue": S(issue, "summary", issue),
        "issue_cap": S(cap, "summary", cap),
        "dept": S(c.choice(DEPT_TEXT[dept]), "department", dept),
        "priority": S(c.choice(PRIO_TEXT[prio]), "priority", prio),
    }


def _x_escalate(c: Ctx, a: dict) -> dict:
    return {"status": "queued", "ticket_id": f"T-{c.rng.randint(100000, 999999)}",
            "department": a.get("department", "general"), "estimated_wait_minutes": c.rng.randint(2, 25)}  # fmt: skip


def _m_escalate(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"I've passed this to a human agent (ticket {r['ticket_id']}). Someone will join in about "
                     f"{r['estimated_wait_minutes']} minutes.",
                     f"You're in the queue for a human agent — ticket {r['ticket_id']}, estimated wait "
                     f"{r['estimated_wait_minutes']} minutes."])  # fmt: skip


ESCALATE = Intent(
    "escalate_to_human", "transfer you to a human agent", _s_escalate,
    [
        "I want to talk to a human about {issue}.",
        "Please connect me with a real person[ from {dept}] — it's about {issue}.",
        "Can I speak to an agent? I need help with {issue}.[ {^priority}.]",
        "Escalate this to a human[ in {dept}]: {issue}.",
        "Get me a supervisor, please. The problem is {issue}.",
        "I've had enough of the bot — put me through to someone about {issue}[, {priority}].",
        "Transfer me to a person[ on the {dept} team] regarding {issue}.",
        "{issue_cap} — I need a human to look at this.[ {^priority}.]",
        "Could a human agent help me with {issue}?[ {^priority}.]",
    ],
    _x_escalate, _m_escalate,
)  # fmt: skip


# --- update_shipping_address
def _addr_text(c: Ctx, a: tuple) -> str:
    street, city, postal, code, name = a
    country = code if c.chance(0.3) else name
    if code in ("US", "CA", "AU"):
        return f"{street}, {city} {postal}, {country}"
    return f"{street}, {postal} {city}, {country}"


def _s_address(c: Ctx) -> dict[str, Slot]:
    o = _order_id(c)
    a = c.pick("addresses", ADDRESSES)
    value = {"street": a[0], "city": a[1], "postal_code": a[2], "country": a[3]}
    return {"order": S(o, "order_id", o), "addr": S(_addr_text(c, a), "address", value)}


def _x_address(c: Ctx, a: dict) -> dict:
    return {"status": "updated", "order_id": a["order_id"], "address": a["address"]}


def _m_address(c: Ctx, a: dict, r: dict) -> str:
    ad = r["address"]
    return c.choice([f"The shipping address for {r['order_id']} is now {ad['street']}, {ad['city']} {ad['postal_code']}.",
                     f"Updated: order {r['order_id']} will ship to {ad['street']}, {ad['city']}."])  # fmt: skip


ADDRESS = Intent(
    "update_shipping_address", "change shipping addresses", _s_address,
    [
        "Please change the shipping address for order {order} to {addr}.",
        "I moved — can you send order {order} to {addr} instead?",
        "Update the delivery address on {order}: {addr}.",
        "Ship {order} to {addr}, please.",
        "New address for order {order}: {addr}",
        "Can you redirect order {order}? The new address is {addr}.",
        "I need order {order} delivered to {addr} rather than my old place.",
        "Change where {order} is going to {addr}.",
        "Correct the address on order {order} — it should be {addr}.",
    ],
    _x_address, _m_address,
)  # fmt: skip


# --- cancel_order
def _s_cancel(c: Ctx) -> dict[str, Slot]:
    o = _order_id(c)
    reason = c.choice(list(CANCEL_REASONS))
    return {"order": S(o, "order_id", o), "reason": S(c.choice(CANCEL_REASONS[reason]), "reason", reason)}


def _x_cancel(c: Ctx, a: dict) -> dict:
    return {"status": "cancelled", "order_id": a["order_id"], "refund_amount": round(c.rng.uniform(12, 480), 2),
            "currency": "USD"}  # fmt: skip


def _m_cancel(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"Order {r['order_id']} is cancelled. {money(r['refund_amount'])} will go back to your original "
                     "payment method.", f"Cancelled — you'll be refunded {money(r['refund_amount'])} for {r['order_id']}."])  # fmt: skip


CANCEL = Intent(
    "cancel_order", "cancel orders", _s_cancel,
    [
        "Cancel order {order}[, {reason}].",
        "Please cancel my order {order}[ — {reason}].",
        "I'd like to cancel {order}[ because {reason}].",
        "Can you stop order {order} before it ships?[ {^reason}.]",
        "Order {order} needs to be cancelled[; {reason}].",
        "Scrap order {order}, please[ — {reason}].",
        "Cancel the order {order} for me[, {reason}].",
        "Could you cancel order number {order}?[ {^reason}.]",
        "Please void order {order}[ since {reason}].",
    ],
    _x_cancel, _m_cancel,
    parallel=["Cancel orders {order.1} and {order.2}.", "Please cancel {order.1}, {order.2} and {order.3}."],
)  # fmt: skip


# --- track_package
def _s_track(c: Ctx) -> dict[str, Slot]:
    carrier = c.choice(list(CARRIERS))
    tn = _tracking(c, carrier)
    name = CARRIERS[carrier]
    return {"tn": S(tn, "tracking_number", tn),
            "carrier": S(c.choice([f"via {name}", f"with {name}", f"through {name}"]), "carrier", carrier),
            "carrier_adj": S(f"a {name} parcel", "carrier", carrier)}  # fmt: skip


def _x_track(c: Ctx, a: dict) -> dict:
    d = c.today + dt.timedelta(days=c.rng.randint(1, 5))
    return {"tracking_number": a["tracking_number"], "carrier": a.get("carrier", c.choice(list(CARRIERS))),
            "status": c.choice(["in transit", "out for delivery", "at local facility"]),
            "last_location": c.choice(CITIES), "estimated_delivery": d.isoformat()}  # fmt: skip


def _m_track(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"Your package is {r['status']}, last scanned in {r['last_location']}, and should arrive "
                     f"{nice_date(r['estimated_delivery'])}.",
                     f"Package {r['tracking_number']}: {r['status']} ({r['last_location']}), estimated delivery "
                     f"{nice_date(r['estimated_delivery'])}."])  # fmt: skip


TRACK = Intent(
    "track_package", "track packages", _s_track,
    [
        "Track package {tn}[ {carrier}].",
        "Where's my package? Tracking number {tn}[, shipped {carrier}].",
        "Can you track {tn} for me?",
        "What's the latest on shipment {tn}[ {carrier}]?",
        "I have a tracking number, {tn}. Where is it now?",
        "Check the tracking for {tn}[ — it's {carrier_adj}].",
        "Any movement on {tn}?",
        "Please look up tracking number {tn}[ {carrier}].",
        "When will package {tn} arrive?",
    ],
    _x_track, _m_track,
    parallel=["Track {tn.1} and {tn.2}, please.", "Where are my packages {tn.1} and {tn.2}?"],
)  # fmt: skip


# --- check_product_availability
def _s_product(c: Ctx) -> dict[str, Slot]:
    p = c.pick("products", PRODUCTS)
    q = c.rng.randint(2, 6)
    z = c.pick("zips", ZIPS)
    return {
        "product": S(p, "product_name", p),
        "qty": S(str(q), "quantity", q),
        "postal": S(z, "postal_code", z),
    }


def _x_product(c: Ctx, a: dict) -> dict:
    have = c.rng.randint(0, 40)
    out: dict[str, Any] = {"product_name": a["product_name"], "in_stock": have >= a.get("quantity", 1),
                           "quantity_available": have}  # fmt: skip
    if "postal_code" in a:
        out["nearest_store"] = f"{c.choice(['Downtown', 'Riverside', 'Northgate', 'Mall'])} store"
    return out


def _m_product(c: Ctx, a: dict, r: dict) -> str:
    if r["in_stock"]:
        where = f" at the {r['nearest_store']}" if "nearest_store" in r else ""
        return f"Good news: the {r['product_name']} is in stock{where} ({r['quantity_available']} available)."
    return f"Sorry, the {r['product_name']} isn't available in that quantity right now (only {r['quantity_available']} left)."


PRODUCT = Intent(
    "check_product_availability", "check product availability", _s_product,
    [
        "Is the {product} in stock?",
        "Do you have the {product} in stock[ near {postal}]?",
        "Can I get {qty} of the {product}? Are they available?",
        "Check availability for the {product}[ near {postal}].",
        "I'd like to buy the {product}[ — {qty} units]. Is it available?",
        "Is the {product} available[ at stores near {postal}]?",
        "Any {product} left in stock?",
        "Stock check: {product}[, quantity {qty}][, zip {postal}].",
        "Will I be able to order the {product} today, or is it sold out?",
    ],
    _x_product, _m_product,
)  # fmt: skip


# --- apply_discount_code
def _s_discount(c: Ctx) -> dict[str, Slot]:
    o, code = _order_id(c), c.pick("codes", DISCOUNT_CODES)
    return {"order": S(o, "order_id", o), "code": S(code, "code", code)}


def _x_discount(c: Ctx, a: dict) -> dict:
    return {"status": "applied", "order_id": a["order_id"], "code": a["code"],
            "discount_amount": round(c.rng.uniform(3, 60), 2), "currency": "USD"}  # fmt: skip


def _m_discount(c: Ctx, a: dict, r: dict) -> str:
    return c.choice([f"Code {r['code']} is applied to {r['order_id']}: you saved {money(r['discount_amount'])}.",
                     f"Done! {r['code']} took {money(r['discount_amount'])} off order {r['order_id']}."])  # fmt: skip


DISCOUNT = Intent(
    "apply_discount_code", "apply discount codes", _s_discount,
    [
        "Apply the code {code} to order {order}.",
        "I have a promo code, {code}. Can you use it on {order}?",
        "Please add discount {code} to my order {order}.",
        "Use coupon {code} for order {order}.",
        "Can code {code} still be applied to {order}?",
        "I forgot to enter {code} at checkout for order {order} — can you apply it now?",
        "Order {order}: please apply promo code {code}.",
        "Discount code {code} on order {order}, please.",
    ],
    _x_discount, _m_discount,
)  # fmt: skip


INTENTS: dict[str, Intent] = {
    i.tool: i
    for i in [WEATHER, SEARCH, EMAIL, STOCK, TRANSLATE, CALC, FLIGHT, CONVERT, EVENT,
              ORDER, REFUND, ESCALATE, ADDRESS, CANCEL, TRACK, PRODUCT, DISCOUNT]
}  # fmt: skip

# Tools that could serve a request for the key tool: never offered when declining it (the decline would be wrong).
SUBSTITUTES = {
    "get_weather": {"search_web"},
    "get_stock_price": {"search_web"},
    "convert_currency": {"search_web", "calculate"},
    "submit_refund": {"escalate_to_human", "cancel_order"},
    "cancel_order": {"escalate_to_human"},
    "update_shipping_address": {"escalate_to_human"},
    "check_order_status": {"escalate_to_human"},
    "track_package": {"escalate_to_human"},
    "apply_discount_code": {"escalate_to_human"},
    "check_product_availability": {"escalate_to_human", "search_web"},
}

# ----------------------------------------------------------------------------------------------
# Multi-step chains: a tool result feeds the next call, then a final answer that uses the results.

Step = tuple[str, dict, dict]  # (tool, arguments, result)


@dataclass
class Chain:
    name: str
    tools: list[str]
    sample: Callable[[Ctx], dict[str, Slot]]
    templates: list[str]
    run: Callable[[Ctx, dict[str, Slot], set[str]], tuple[list[list[Step]], str]]


def _args(slots: dict[str, Slot], names: list[str], mentioned: set[str]) -> dict:
    return {slots[n].arg: slots[n].value for n in names if n in mentioned}


def _s_stock_cost(c: Ctx) -> dict[str, Slot]:
    s = _s_stock(c)
    shares = c.choice([c.rng.randint(2, 40), c.rng.randint(50, 500)])
    s["shares"] = S(str(shares), None, shares)
    return s


def _r_stock_cost(c: Ctx, s: dict[str, Slot], m: set[str]):
    t = s["tk"].value
    q = _x_stock(c, {"ticker": t})
    shares = s["shares"].value
    expr = f"{shares} * {q['price']}"
    total = round(shares * q["price"], 2)
    final = c.choice([f"At {money(q['price'])} per share, {shares} shares of {t} would cost about {money(total)}.",
                      f"{t} is at {money(q['price'])}, so {shares} shares come to {money(total)}.",
                      f"{shares} × {money(q['price'])} = {money(total)} for your {t} shares at the current price."])  # fmt: skip
    return [
        [("get_stock_price", {"ticker": t}, q)],
        [("calculate", {"expression": expr}, {"expression": expr, "result": num(total)})],
    ], final


STOCK_COST = Chain(
    "stock_cost", ["get_stock_price", "calculate"], _s_stock_cost,
    [
        "How much would {shares} shares of {ticker} cost right now?",
        "I want to buy {shares} shares of {ticker}. What's the total at the current price?",
        "What's the current value of {shares} {tk} shares?",
        "If I bought {shares} shares of {ticker} today, how much would I pay?",
        "Look up {ticker} and tell me what {shares} shares are worth.",
        "I own {shares} shares of {ticker}. What are they worth at the moment?",
        "Figure out the cost of {shares} {tk} shares at the latest price.",
        "Price check: {shares} shares of {tk} at today's price?",
    ],
    _r_stock_cost,
)  # fmt: skip


def _s_split(c: Ctx) -> dict[str, Slot]:
    s = _s_convert(c)
    people = c.rng.randint(2, 8)
    s["people"] = S(c.choice([str(people), NUMBER_WORDS[people]]), None, people)
    return s


def _r_split(c: Ctx, s: dict[str, Slot], m: set[str]):
    a = _args(s, ["amount", "from", "to"], m)
    r = _x_convert(c, a)
    people = s["people"].value
    expr = f"{r['converted_amount']} / {people}"
    each = round(r["converted_amount"] / people, 2)
    to = r["to_currency"]
    final = c.choice([f"{a['amount']:,} {a['from_currency']} is {r['converted_amount']:,.2f} {to}, so each of the {people} "
                      f"of you pays {each:,.2f} {to}.",
                      f"Converted, that's {r['converted_amount']:,.2f} {to}; split {people} ways it's {each:,.2f} {to} per person."])  # fmt: skip
    return [
        [("convert_currency", a, r)],
        [("calculate", {"expression": expr}, {"expression": expr, "result": num(each)})],
    ], final


CONVERT_SPLIT = Chain(
    "convert_split", ["convert_currency", "calculate"], _s_split,
    [
        "We spent {amount} {from} on dinner. Convert it to {to} and split it {people} ways.",
        "The hotel bill is {amount} {from}. How much is that per person in {to} if there are {people} of us?",
        "Convert {amount} {from} to {to}, then divide by {people}.",
        "{people} friends are sharing a {amount} {from} rental. What does each owe in {to}?",
        "I paid {amount} {from} for the group tickets; there are {people} of us. How much should each person send me in {to}?",
        "Split {amount} {from} between {people} people, in {to} please.",
        "What's {amount} {from} in {to} divided among {people} people?",
        "Our trip cost {amount} {from} in total. Work out each person's share in {to} for {people} travellers.",
    ],
    _r_split,
)  # fmt: skip


def _s_order_refund(c: Ctx) -> dict[str, Slot]:
    return _s_refund(c)


def _r_order_refund(c: Ctx, s: dict[str, Slot], m: set[str]):
    o, reason = s["order"].value, s["reason"].value
    st = _order_record(c, o, status="delivered")
    a = {"order_id": o, "reason": reason, "amount": st["total"]}
    r = _x_refund(c, a)
    final = c.choice([f"Order {o} was delivered on {nice_date(st['delivered_on'])}, so I've refunded the full "
                      f"{money(st['total'])} (reference {r['refund_id']}). Expect it within {r['eta_business_days']} business days.",
                      f"I checked order {o} and submitted a full refund of {money(st['total'])} — reference {r['refund_id']}."])  # fmt: skip
    return [[("check_order_status", {"order_id": o}, st)], [("submit_refund", a, r)]], final


ORDER_REFUND = Chain(
    "order_refund", ["check_order_status", "submit_refund"], _s_order_refund,
    [
        "Order {order}: {reason}. Please look it up and refund me the full amount.",
        "{^reason}. Can you check order {order} and refund whatever I paid?",
        "I need a full refund on {order} because {reason}. Check the order total first.",
        "Look up order {order} and refund the whole order total — {reason_noun}.",
        "Can you find out what I paid for order {order} and refund all of it? {^reason}.",
        "Refund my order {order} in full, please. Reason: {reason_noun}.",
        "Check {order} and give me my money back — the full amount. {^reason}.",
        "Please verify order {order} and issue a complete refund since {reason}.",
    ],
    _r_order_refund,
)  # fmt: skip


def _r_order_track(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = _order_record(c, o, status="shipped")
    tr = _x_track(c, {"tracking_number": st["tracking_number"], "carrier": st["carrier"]})
    a2 = {"tracking_number": st["tracking_number"]}
    if c.chance(0.5):
        a2["carrier"] = st["carrier"]
    final = c.choice([f"Order {o} shipped with {CARRIERS[st['carrier']]}. It's {tr['status']}, last seen in "
                      f"{tr['last_location']}, and should arrive {nice_date(tr['estimated_delivery'])}.",
                      f"Your package (tracking {st['tracking_number']}) is {tr['status']} near {tr['last_location']}; "
                      f"estimated delivery {nice_date(tr['estimated_delivery'])}."])  # fmt: skip
    return [[("check_order_status", {"order_id": o}, st)], [("track_package", a2, tr)]], final


ORDER_TRACK = Chain(
    "order_track", ["check_order_status", "track_package"], _s_order,
    [
        "Where exactly is my order {order} right now? Track the package for me.",
        "Order {order} says shipped — can you find the tracking number and tell me where it is?",
        "Can you track the shipment for order {order}?",
        "I'd like live tracking for {order}.",
        "Look up order {order}, then track its package.",
        "When will {order} actually get here? Please check the carrier's tracking.",
        "Find the parcel for order {order} and tell me its current location.",
        "Track my order {order} all the way to the latest scan, please.",
    ],
    _r_order_track,
)  # fmt: skip


def _r_order_cancel(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = _order_record(c, o, status="processing")
    a = _args(s, ["order", "reason"], m)
    r = _x_cancel(c, a)
    final = c.choice([f"Order {o} hadn't shipped yet, so I cancelled it. {money(r['refund_amount'])} will be refunded.",
                      f"Good timing — {o} was still processing. It's now cancelled and {money(r['refund_amount'])} is on its way back to you."])  # fmt: skip
    return [[("check_order_status", {"order_id": o}, st)], [("cancel_order", a, r)]], final


ORDER_CANCEL = Chain(
    "order_cancel", ["check_order_status", "cancel_order"], _s_cancel,
    [
        "If order {order} hasn't shipped yet, cancel it[ — {reason}].",
        "Check whether {order} has gone out; if not, please cancel it.[ {^reason}.]",
        "Can you see if order {order} is still processing and cancel it if so?",
        "Cancel {order} as long as it hasn't shipped[, {reason}].",
        "Has {order} shipped? If it hasn't, I want it cancelled.",
        "Please check order {order} and stop it if it's not out the door yet[ — {reason}].",
        "Look up order {order}. If it's still being prepared, cancel it.",
        "Is it too late to cancel {order}? If not, go ahead and cancel.[ {^reason}.]",
    ],
    _r_order_cancel,
)  # fmt: skip


def _r_order_address(c: Ctx, s: dict[str, Slot], m: set[str]):
    o = s["order"].value
    st = _order_record(c, o, status="processing")
    a = {"order_id": o, "address": s["addr"].value}
    r = _x_address(c, a)
    ad = s["addr"].value
    final = c.choice([f"Order {o} hasn't shipped yet, so I've updated the address to {ad['street']}, {ad['city']}.",
                      f"Done — {o} was still processing and will now ship to {ad['street']}, {ad['city']} {ad['postal_code']}."])  # fmt: skip
    return [[("check_order_status", {"order_id": o}, st)], [("update_shipping_address", a, r)]], final


ORDER_ADDRESS = Chain(
    "order_address", ["check_order_status", "update_shipping_address"], _s_address,
    [
        "If order {order} hasn't shipped, change the address to {addr}.",
        "Check {order} and, if it's still processing, send it to {addr} instead.",
        "Can you see whether {order} is out yet? If not, the new address is {addr}.",
        "I moved to {addr}. Please check whether order {order} can still be redirected and update it.",
        "Look up order {order} and update the shipping address to {addr} if it hasn't left the warehouse.",
        "Is it too late to change the address on {order}? If not, use {addr}.",
        "Before {order} ships, switch the delivery address to {addr} — check its status first.",
        "Please verify {order} hasn't shipped and then redirect it to {addr}.",
    ],
    _r_order_address,
)  # fmt: skip


def _s_weather_mail(c: Ctx) -> dict[str, Slot]:
    s = _s_weather(c)
    s.update({k: v for k, v in _s_email(c).items() if k in ("to",)})
    return s


def _r_weather_mail(c: Ctx, s: dict[str, Slot], m: set[str]):
    wa = _args(s, ["city", "when", "units"], m)
    w = _x_weather(c, wa)
    deg = "°F" if w["units"] == "fahrenheit" else "°C"
    day = f" on {nice_date(w['date'])}" if "date" in w else " right now"
    subject = f"Weather in {w['location']}" + (f" on {nice_date(w['date'])}" if "date" in w else "")
    body = f"{w['location']}{day}: {w['condition']}, {w['temperature']}{deg}, humidity {w['humidity']}%."
    ea = {"to": s["to"].value, "subject": subject, "body": body}
    er = _x_email(c, ea)
    final = c.choice([f"It's {w['condition']} and {w['temperature']}{deg} in {w['location']}{day}. I've emailed that to {join_words(ea['to'])}.",
                      f"Done — I sent {join_words(ea['to'])} the forecast: {body}"])  # fmt: skip
    return [[("get_weather", wa, w)], [("send_email", ea, er)]], final


WEATHER_MAIL = Chain(
    "weather_mail", ["get_weather", "send_email"], _s_weather_mail,
    [
        "Check the weather in {city} {when} and email it to {to}.",
        "Look up the forecast for {city} {when}[ {units}], then send it to {to}.",
        "Can you get the current weather in {city} and email {to} a summary?",
        "Email {to} what the weather will be like in {city} {when}.",
        "Find out how the weather looks in {city} {when} and let {to} know by email.",
        "Send {to} an email with the forecast for {city} {when}.",
        "Please check {city}'s weather[ {when}] and forward the details to {to}.",
        "What's the weather in {city} {when}? Also email the answer to {to}.",
    ],
    _r_weather_mail,
)  # fmt: skip


def _s_stock_diff(c: Ctx) -> dict[str, Slot]:
    a, b = _s_stock(c), _s_stock(c)
    while b["tk"].value == a["tk"].value:
        b = _s_stock(c)
    return {"t1": a["ticker"], "t2": b["ticker"], "k1": a["tk"], "k2": b["tk"]}


def _r_stock_diff(c: Ctx, s: dict[str, Slot], m: set[str]):
    t1, t2 = s["k1"].value, s["k2"].value
    q1, q2 = _x_stock(c, {"ticker": t1}), _x_stock(c, {"ticker": t2})
    expr = f"{q1['price']} - {q2['price']}"
    diff = round(q1["price"] - q2["price"], 2)
    rel = "more" if diff >= 0 else "less"
    final = c.choice([f"{t1} is at {money(q1['price'])} and {t2} at {money(q2['price'])}, so one {t1} share costs "
                      f"{money(abs(diff))} {rel} than one {t2} share.",
                      f"The gap is {money(abs(diff))}: {t1} {money(q1['price'])} vs {t2} {money(q2['price'])}."])  # fmt: skip
    return [[("get_stock_price", {"ticker": t1}, q1), ("get_stock_price", {"ticker": t2}, q2)],
            [("calculate", {"expression": expr}, {"expression": expr, "result": num(diff)})]], final  # fmt: skip


STOCK_DIFF = Chain(
    "stock_diff", ["get_stock_price", "calculate"], _s_stock_diff,
    [
        "What's the price difference between {t1} and {t2} right now?",
        "How much more does a share of {t1} cost than a share of {t2}?",
        "Get {k1} and {k2} prices and subtract the second from the first.",
        "Compare {t1} with {t2}: what's the gap per share?",
        "By how many dollars does {t1} trade above or below {t2} today?",
        "Look up {k1} and {k2}, then tell me the difference in share price.",
        "Is {t1} pricier than {t2}? By how much exactly?",
        "Calculate the spread between {k1} and {k2} share prices.",
    ],
    _r_stock_diff,
)  # fmt: skip


CHAINS: dict[str, Chain] = {
    c.name: c
    for c in [
        STOCK_COST,
        CONVERT_SPLIT,
        ORDER_REFUND,
        ORDER_TRACK,
        ORDER_CANCEL,
        ORDER_ADDRESS,
        WEATHER_MAIL,
        STOCK_DIFF,
    ]
}

# ----------------------------------------------------------------------------------------------
# No call: chit-chat and questions answerable without tools; clarifications; "what can you do".

CHAT = [
    ("Hi! How are you today?", "I'm doing well, thanks for asking! How can I help you today?"),
    ("Thanks, that's all I needed.", "You're welcome! Have a great day."),
    ("What's the capital of Australia?", "The capital of Australia is Canberra."),
    ("Who wrote Pride and Prejudice?", "Pride and Prejudice was written by Jane Austen and published in 1813."),
    ("Can you explain what a haiku is?", "A haiku is a short Japanese poem of three lines with a 5-7-5 syllable pattern, often about nature or a single moment."),
    ("Tell me a joke.", "Why don't scientists trust atoms? Because they make up everything!"),
    ("How many continents are there?", "There are seven continents: Africa, Antarctica, Asia, Australia (Oceania), Europe, North America and South America."),
    ("What does HTTP stand for?", "HTTP stands for Hypertext Transfer Protocol, the protocol browsers and web servers use to exchange pages and data."),
    ("Give me a tip for staying focused while working from home.", "Work in focused blocks — say 25 to 50 minutes with a short break after each — and keep your phone out of reach during them."),
    ("What's the difference between weather and climate?", "Weather is the short-term state of the atmosphere, like today's rain or sunshine; climate is the average pattern of weather in a region over decades."),
    ("How do I boil an egg?", "Lower the egg into boiling water: about 6–7 minutes for a jammy yolk or 9–10 minutes for hard-boiled, then cool it in cold water before peeling."),
    ("What is photosynthesis?", "Photosynthesis is how plants, algae and some bacteria turn light, water and carbon dioxide into sugar, releasing oxygen as a by-product."),
    ("Can you suggest a name for my new cat?", "How about Miso, Pepper, Luna or Biscuit? Tell me a bit about your cat's personality and I can suggest more."),
    ("Good morning!", "Good morning! What can I do for you today?"),
    ("What's a good way to learn a new language?", "Practise a little every day, learn the most common words first, and get regular speaking practice — even short conversations help a lot."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci in the early 1500s."),
    ("How many days are in a leap year?", "A leap year has 366 days; the extra day is February 29."),
    ("What's the boiling point of water?", "At sea level, water boils at 100 °C (212 °F)."),
    ("Write me a short motivational sentence.", "Small steps every day add up to big changes — keep going."),
    ("Do you have feelings?", "I don't have feelings the way people do, but I'm here to help however I can."),
    ("What's the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Can you summarise what a mortgage is in one sentence?", "A mortgage is a loan for buying property, repaid over time with interest, with the property itself as collateral."),
    ("Which is bigger, a kilobyte or a megabyte?", "A megabyte is bigger: it's 1,000 kilobytes (or 1,024 in the binary convention)."),
    ("Never mind, I figured it out.", "Great, glad you got it sorted! Let me know if anything else comes up."),
    ("What language is spoken in Brazil?", "The official language of Brazil is Portuguese."),
    ("How should I start a cover letter?", "Open with a short sentence naming the role and one concrete reason you're a strong fit, then expand on it in the next paragraph."),
    ("Is a tomato a fruit or a vegetable?", "Botanically a tomato is a fruit, since it grows from the flower and contains seeds, but in cooking it's usually treated as a vegetable."),
    ("What year did people first walk on the Moon?", "Neil Armstrong and Buzz Aldrin walked on the Moon in 1969, during the Apollo 11 mission."),
    ("Recommend a classic novel to read.", "Try One Hundred Years of Solitude by Gabriel García Márquez — a rich, multi-generational story many readers love."),
    ("What's the plural of 'cactus'?", "Both 'cacti' and 'cactuses' are accepted; 'cacti' is the more common form."),
    ("OK, thank you!", "Anytime! Is there anything else I can help with?"),
    ("What is an API?", "An API (application programming interface) is a defined way for one piece of software to request data or actions from another."),
    ("How long should I steep green tea?", "About 2–3 minutes in water around 75–80 °C; longer or hotter tends to make it bitter."),
    ("Explain compound interest simply.", "Compound interest means you earn interest on your interest: each period the interest is added to the balance, so the next period's interest is calculated on a larger amount."),
    ("Why is the sky blue?", "Air molecules scatter short blue wavelengths of sunlight much more than red ones, so blue light reaches your eyes from every direction."),
    ("Who are you?", "I'm an AI assistant. I can answer questions and, when it helps, use the tools available to me."),
    ("Can you help me come up with a title for my blog post about houseplants?", "Sure! How about \u201cGreen Roommates: Easy Houseplants That Thrive on Neglect\u201d?"),
    ("What's the opposite of 'generous'?", "The opposite of 'generous' is 'stingy' (or 'selfish', depending on context)."),
    ("Hello, is anyone there?", "Yes, I'm here! How can I help?"),
    ("What's the main ingredient in guacamole?", "Avocado — mashed and usually mixed with lime juice, onion, cilantro and salt."),
    ("I'm bored. Any ideas?", "You could take a short walk, try a new recipe, start a puzzle or a book, or learn a few phrases of a new language."),
    ("How do you pronounce 'quinoa'?", "It's usually pronounced KEEN-wah."),
]  # fmt: skip

# (user, assistant) for a tool that IS offered but whose required values are missing: ask, do not call.
CLARIFY: list[tuple[str, str, str]] = [  # (tool, user, assistant); {slots} come from the tool's sampler
    ("get_weather", "What's the weather going to be like?", "Sure — which city would you like the weather for?"),
    ("get_weather", "Will I need a jacket tomorrow?", "I can check the forecast for you. Which city will you be in?"),
    ("get_weather", "Check the forecast for me, please.", "Happy to. Which city, and for which day?"),
    ("send_email", "Send an email to my manager.", "Sure. What's your manager's email address, and what should the subject and message say?"),
    ("send_email", "Email {to} for me.", "Of course. What subject and message would you like me to send to {to}?"),
    ("send_email", "Can you send a quick note to Sam saying I'll be late?", "Sure — what's Sam's email address?"),
    ("book_flight", "Book me a flight to {dest}.", "Happy to help. Where are you flying from, and on what date would you like to leave?"),
    ("book_flight", "I need a plane ticket from {origin}.", "Where would you like to fly to, and on which date?"),
    ("get_stock_price", "Check my stock for me.", "Sure — which ticker symbol should I look up?"),
    ("translate_text", "Can you translate something for me?", "Of course! What text would you like translated, and into which language?"),
    ("translate_text", "Translate this into {target}.", "Sure — please paste the text you'd like translated into {target}."),
    ("calculate", "Can you help me with a calculation?", "Sure! What would you like me to calculate?"),
    ("convert_currency", "What's the exchange rate?", "Which two currencies would you like to compare, and how much do you want to convert?"),
    ("convert_currency", "Convert {amount} {from} for me.", "Sure — which currency should I convert {amount} {from} into?"),
    ("create_calendar_event", "Add something to my calendar.", "Sure. What's the event called, and on what date and time?"),
    ("create_calendar_event", "Put \"{title}\" on my calendar.", "Happy to. What date and start time should I use for \u201c{title}\u201d?"),
    ("search_web", "Can you look something up for me?", "Sure — what would you like me to search for?"),
    ("check_order_status", "Where's my order?", "I can check that for you. What's your order number? It looks like ORD- followed by six digits."),
    ("check_order_status", "Has my package shipped yet?", "Let me look into it. Could you give me your order number?"),
    ("submit_refund", "I want a refund.", "I'm sorry to hear that. What's the order number, and what went wrong with the order?"),
    ("submit_refund", "Refund order {order}, please.", "I can help with that. Could you tell me why you're requesting a refund — was the item damaged, defective, the wrong item, late, or did it not arrive?"),
    ("cancel_order", "I need to cancel an order.", "No problem. What's the order number?"),
    ("update_shipping_address", "I need to change the delivery address for order {order}.", "Sure — what's the new address, including street, city, postal code and country?"),
    ("update_shipping_address", "Can you update my shipping address?", "Of course. Which order is it for, and what's the new address?"),
    ("track_package", "Can you track my package?", "Sure — what's the tracking number?"),
    ("check_product_availability", "Is it in stock?", "Which product are you asking about?"),
    ("apply_discount_code", "I have a discount code.", "Great! What's the code, and which order should I apply it to?"),
    ("apply_discount_code", "Apply my coupon to order {order}.", "Sure — what's the coupon code?"),
]  # fmt: skip

WHAT_CAN = [
    "What can you do?",
    "What are you able to help me with?",
    "Which tools do you have access to?",
    "What kinds of things can you do for me here?",
    "Before I ask — what are your capabilities?",
    "Can you tell me what you can help with?",
    "What sort of tasks can you handle?",
    "List the things you can do for me.",
]
WHAT_CAN_ANSWERS = [
    "I can {caps}. What would you like to do?",
    "With the tools I have here, I can {caps}. Just tell me what you need.",
    "Right now I'm able to {caps}. I can also answer general questions.",
]

# ----------------------------------------------------------------------------------------------
# Declines: requests no offered tool can serve.

OUT_OF_SCOPE = [  # (request, capability it would need)
    ("Order me a large pepperoni pizza from the place down the street.", "order food"),
    ("Turn off the lights in the living room.", "control smart-home devices"),
    ("Play some relaxing jazz on Spotify.", "play music"),
    ("Call my mom.", "make phone calls"),
    ("Set an alarm for 6:30 tomorrow morning.", "set alarms"),
    ("Book a table for four at an Italian restaurant tonight at 8.", "make restaurant reservations"),
    ("Post this photo to my Instagram story.", "post to social media"),
    ("Transfer $200 from my checking account to savings.", "move money between bank accounts"),
    ("Order an Uber to the airport.", "book rides"),
    ("Text Jamie that I'm running late.", "send text messages"),
    ("Start the robot vacuum.", "control smart-home devices"),
    ("Print the document I just saved.", "print documents"),
    ("Lock the front door.", "control smart locks"),
    ("Rent me a car in Denver for the weekend.", "rent cars"),
    ("Pay my electricity bill.", "pay bills"),
    ("Change my account password.", "change account passwords"),
    ("Reserve a hotel room in Lisbon for three nights.", "book hotels"),
    ("Buy two tickets for the 7pm showing of the new Pixar movie.", "buy cinema tickets"),
]  # fmt: skip

DECLINE_REPLIES = [
    "I'm sorry, but I can't {cap} — none of the tools available to me can do that.",
    "Unfortunately I don't have a tool to {cap} here. I can {offered} if that helps.",
    "I can't {cap} with the tools I have access to right now. You may want to use a dedicated app or service for that.",
    "That's outside what I can do here: I don't have access to a tool that can {cap}.",
    "Sorry — I'm not able to {cap}. The tools I have can only {offered}.",
    "I don't have a way to {cap} in this conversation, so I can't do that for you.",
    "I'd like to help, but none of my available tools lets me {cap}.",
    "I can't do that one — there's no tool here to {cap}. Is there something else I can help with?",
]

# ----------------------------------------------------------------------------------------------
# System prompts (None = no system message), greetings, joiners for parallel requests.

SYSTEM_PROMPTS: list[tuple[str, str]] = [  # (affinity: any|general|customer_service, text)
    ("any", "You are a helpful assistant."),
    ("any", "You are a helpful assistant with access to tools. Use them when they help answer the user's request."),
    ("any", "You are Ava, a friendly virtual assistant. Keep answers concise."),
    ("any", "You are an AI assistant. Only call a tool when the request needs it; otherwise answer directly."),
    ("any", "Answer briefly. Call functions when needed."),
    ("any", "You help users with everyday tasks. If you can't do something with the tools you have, say so plainly."),
    ("any", "Be accurate and never invent tool results."),
    ("general", "You are a travel and productivity assistant."),
    ("general", "You are Max, a personal assistant for busy professionals. Be efficient and polite."),
    ("customer_service", "You are a customer support assistant for Northwind Outfitters. Be polite and use the available tools to help customers."),
    ("customer_service", "You are ShopBot, the support assistant for an online electronics store."),
    ("customer_service", "You are a support agent. Verify order details with your tools before promising anything."),
]  # fmt: skip

GREETINGS = ["Hi! ", "Hello! ", "Hey. ", "Good morning! ", "Hi there. "]
THANKS = [" Thanks!", " Thank you.", " Thanks a lot.", " Cheers."]


def _j_space(p: list[str]) -> str:
    return " ".join(p)


JOINERS: list[Callable[[list[str]], str]] = [
    _j_space,
    lambda p: "\n".join(p),
    lambda p: "A few things, please. " + " ".join(p),
    lambda p: " Also: ".join(p),
    lambda p: " ".join(f"{w}: {x}" for w, x in zip(["First", "Second", "Third"], p, strict=False)),
    lambda p: "\n".join(f"- {x}" for x in p),
    lambda p: "\n".join(f"{i}. {x}" for i, x in enumerate(p, 1)),
    lambda p: " And one more: ".join(p),
]

# Sequential joiners: user catalogs' multi-step requests (one call after the other).
SEQ_JOINERS: list[Callable[[list[str]], str]] = [
    lambda p: f"{p[0]} After that: {p[1]}",
    lambda p: f"Step 1: {p[0]} Step 2: {p[1]}",
    lambda p: f"{p[0]} Once that's done, do this too: {p[1]}",
    lambda p: f"Please do these in order. 1) {p[0]} 2) {p[1]}",
]
