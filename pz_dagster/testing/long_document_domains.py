"""Domain vocabularies of the long-document corpus (``long_documents``): entity makers, section
titles, sentence templates, bullet lists, tables and the labelled fields of each domain, with
the sentences that state each field's value and the distractors that make naive merging wrong.

Everything here is hand-written for this project and released with it under the MIT licence;
the names of people, companies and places are combinations of common words and names, not
references to real entities.

A template's ``{slot}`` is filled from the document's entities first, then from the domain's
``slots``, then from the generators in ``COMMON`` (numbers, dates, money, names).
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Ents = dict[str, Any]

FIRST = (
    "Amara", "Benedikt", "Carmen", "Dalia", "Emeka", "Farah", "Gideon", "Hana", "Ivo", "Jasmin",
    "Kenji", "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tamsin",
    "Ulrich", "Vera", "Wendell", "Ximena", "Yusuf", "Zofia", "Anders", "Beatriz", "Colm",
    "Delphine", "Elliot", "Fiona", "Goran", "Helena", "Idris", "Johanna", "Kwame", "Leona",
    "Marcus", "Noor", "Otto", "Paloma", "Rafael", "Signe", "Tobias", "Ursula", "Viktor", "Wanda",
)  # fmt: skip
LAST = (
    "Abernathy", "Brennan", "Castellano", "Draper", "Eriksen", "Fairbanks", "Galloway", "Hartmann",
    "Ishikawa", "Jablonski", "Kowalczyk", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Pellegrini",
    "Quigley", "Ramasamy", "Sorensen", "Thackeray", "Underwood", "Valentini", "Whitcombe", "Yardley",
    "Zielinski", "Ashworth", "Bianchi", "Carrington", "Delacroix", "Esposito", "Fitzgerald", "Gunnarsson",
    "Holloway", "Iverson", "Juarez", "Kingsley", "Lockhart", "Mbeki", "Northcott", "Oyelaran",
    "Pemberton", "Rasmussen", "Sandoval", "Trevelyan", "Vasquez", "Winslow", "Achterberg", "Brightwell",
)  # fmt: skip
PLACE = (
    "Harbor", "Ridgeway", "Northgate", "Silverbrook", "Cedar", "Lakeshore", "Ironwood", "Westfield",
    "Maple", "Granite", "Summit", "Riverside", "Oakmont", "Bayview", "Copperfield", "Highland",
    "Elm Park", "Stonebridge", "Fairmont", "Kingsway", "Millbrook", "Pinecrest", "Eastwood", "Sterling",
)  # fmt: skip
TRADE = (
    "Logistics", "Analytics", "Provisions", "Dental Group", "Architects", "Outfitters", "Bakery",
    "Engineering", "Imaging", "Textiles", "Software", "Pharmacy", "Fitness", "Print Works", "Foods",
    "Robotics", "Veterinary Clinic", "Design Studio", "Freight", "Optics", "Learning Centre",
)  # fmt: skip
SUFFIX = ("LLC", "Inc.", "Ltd.", "Corp.", "Co.", "Partners LLP", "Group Ltd.")
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def company(rng: random.Random, trades: tuple[str, ...] = TRADE) -> str:
    return f"{rng.choice(PLACE)} {rng.choice(trades)} {rng.choice(SUFFIX)}"


def date(rng: random.Random, years: tuple[int, int] = (2018, 2025)) -> str:
    return f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(*years)}"


def money(rng: random.Random, low: int, high: int, step: int) -> str:
    return f"${rng.randrange(low, high, step):,}"


def millions(rng: random.Random, low: int = 5, high: int = 900) -> str:
    return f"${rng.randint(low, high):,}.{rng.randint(1, 9)} million"


def distinct(
    rng: random.Random, make: Callable[[random.Random], str], avoid: set[str], tries: int = 50
) -> str:
    """A value from ``make`` that is none of ``avoid`` (compared ignoring case)."""
    low = {a.lower() for a in avoid}
    for _ in range(tries):
        v = make(rng)
        if v.lower() not in low:
            return v
    raise RuntimeError(f"no value distinct from {sorted(avoid)}")


def near_miss(rng: random.Random, value: str) -> str:
    """A number that looks like ``value``: two adjacent digits swapped, or one digit changed,
    in the same format ("$4,250" -> "$4,520" or "$4,850").

    >>> near_miss(random.Random(1), "$12,840,000") != "$12,840,000"
    True
    """
    digits = [i for i, c in enumerate(value) if c.isdigit()]
    for _ in range(50):
        chars = list(value)
        if len(digits) > 1 and rng.random() < 0.5:
            k = rng.randrange(len(digits) - 1)
            a, b = digits[k], digits[k + 1]
            chars[a], chars[b] = chars[b], chars[a]
        else:
            i = rng.choice(digits[1:] or digits)
            chars[i] = str((int(chars[i]) + rng.randint(1, 8)) % 10)
        out = "".join(chars)
        if out != value and not re.match(r"\D*0\d", out):
            return out
    raise RuntimeError(f"no near miss of {value!r}")


COMMON: dict[str, Callable[[random.Random], str]] = {
    "num": lambda r: str(r.randint(2, 30)),
    "num3": lambda r: str(r.randint(100, 999)),
    "pct": lambda r: f"{r.randint(1, 38)}.{r.randint(0, 9)}%",
    "money": lambda r: money(r, 1_000, 250_000, 50),
    "money_m": millions,
    "date": date,
    "year": lambda r: str(r.randint(2012, 2026)),
    "month": lambda r: r.choice(MONTHS),
    "weekday": lambda r: r.choice(WEEKDAYS),
    "time": lambda r: f"{r.randint(1, 9)}:{r.choice(range(0, 60, 5)):02d} p.m.",
    "person": person,
    "company": company,
    "place": lambda r: r.choice(PLACE),
}


@dataclass(frozen=True)
class Distractor:
    """A value a reader could mistake for the field's: ``kind`` says how (``superseded``: an
    earlier value replaced; ``other_entity``: the same kind of value of another party;
    ``near_miss``: a similar number for another quantity)."""

    kind: str
    value: Callable[[random.Random, Ents, str], str]  # (rng, entities, the true value)
    sentences: tuple[str, ...]  # templates with {value}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    desc: str
    value: Callable[[random.Random, Ents], str]
    sentences: tuple[str, ...]  # evidence templates with {value}
    distractors: tuple[Distractor, ...]


@dataclass(frozen=True)
class DomainSpec:
    name: str
    entities: Callable[[random.Random], Ents]
    opening: tuple[str, ...]  # blocks of page 1: "# " a heading, else a paragraph template
    closing: tuple[str, ...]  # blocks of the last page, after its text
    sections: tuple[str, ...]
    sentences: tuple[str, ...]
    bullets: tuple[tuple[str, str], ...]  # (lead-in template, slot the items come from)
    tables: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]  # (header, row templates)
    slots: dict[str, tuple[str, ...]]
    fields: tuple[FieldSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)


# --- commercial lease agreements ---------------------------------------------------------


def _lease_entities(rng: random.Random) -> Ents:
    landlord = f"{rng.choice(PLACE)} {rng.choice(('Properties', 'Realty', 'Estates'))} Inc."
    return {
        "landlord": landlord,
        "building": f"{rng.choice(PLACE)} {rng.choice(('Centre', 'Plaza', 'Commons', 'Tower'))}",
        "address": f"{rng.randint(10, 9800)} {rng.choice(PLACE)} {rng.choice(('Road', 'Avenue', 'Street', 'Boulevard'))}",
        "city": rng.choice(PLACE) + rng.choice((" Falls", " Springs", "ville", " City")),
        "manager": person(rng),
        "term_years": str(rng.choice((3, 5, 7, 10))),
    }


LEASE = DomainSpec(
    name="lease",
    entities=_lease_entities,
    opening=(
        "# Commercial Lease Agreement",
        "This Commercial Lease Agreement is made as of {date} in respect of premises in "
        "{building}, {address}, {city}. The landlord is {landlord}.",
        "The Term of this Lease is {term_years} years from the Commencement Date, unless "
        "terminated earlier in accordance with its provisions.",
    ),
    closing=(
        "# Execution",
        "IN WITNESS WHEREOF the parties have executed this Lease as of the date first written "
        "above, each by its duly authorised signing officer.",
        "Signed for {landlord} by its property manager, {manager}. Signed for the Tenant by its "
        "authorised signatory.",
    ),
    sections=(
        "Definitions",
        "Premises",
        "Term",
        "Rent",
        "Operating Expenses",
        "Use of Premises",
        "Maintenance and Repairs",
        "Alterations and Improvements",
        "Insurance",
        "Indemnity",
        "Assignment and Subletting",
        "Default and Remedies",
        "Landlord's Access",
        "Utilities and Services",
        "Compliance with Laws",
        "Environmental Matters",
        "Damage and Destruction",
        "Subordination and Estoppel",
        "Parking",
        "Signage",
        "Holding Over",
        "Surrender of Premises",
        "Notices",
        "General Provisions",
    ),
    sentences=(
        "The Tenant shall keep the {area} in good order and repair, reasonable wear and tear excepted.",
        "Any {fixture} installed by the Tenant shall remain the property of {landlord} at the end of the Term unless otherwise agreed in writing.",
        "The Tenant shall not make any structural alteration to the {area} without the prior written consent of the Landlord, which shall not be unreasonably withheld.",
        "{landlord} shall maintain the roof, foundations and structural elements of {building} at its own cost.",
        "The Tenant's proportionate share of operating expenses is fixed at {pct} of the rentable area of {building}.",
        "Operating expenses include {expense}, {expense} and the cost of managing the common areas.",
        "Estimated operating expenses for the current year are {money} per annum, payable in equal instalments together with the Base Rent.",
        "The Tenant shall maintain commercial general liability insurance with limits of not less than {money} per occurrence.",
        "All policies shall name {landlord} and its property manager as additional insureds.",
        "The Tenant shall use the Premises solely for {use} and for no other purpose.",
        "The Tenant shall not permit any nuisance, excessive noise or offensive odour to emanate from the Premises.",
        "The Landlord shall provide {utility} to the Premises during normal business hours, being {hours}.",
        "After-hours {utility} may be requested on {num} hours' notice and will be charged at the Landlord's prevailing rate.",
        "The Tenant shall not assign this Lease or sublet any part of the Premises without the Landlord's prior written consent.",
        "Any permitted assignee shall assume in writing all obligations of the Tenant under this Lease.",
        "If any instalment of Rent is not paid when due, interest shall accrue at {interest} until paid.",
        "The Landlord may enter the Premises at reasonable times to inspect them, to make repairs or to show them to prospective purchasers.",
        "In the event of damage by fire or other casualty, the Landlord shall restore the Premises within {num} months, subject to the availability of insurance proceeds.",
        "The Tenant shall comply with all laws, by-laws and regulations of {city} applicable to its use of the Premises.",
        "No hazardous substance shall be brought onto the Premises except in quantities customary for {use}.",
        "The Tenant shall be entitled to the use of {num} unreserved parking spaces in the {parking}.",
        "Signage on the {sign} shall conform to the building standard and be installed at the Tenant's expense.",
        "A Tenant remaining in possession after the end of the Term does so as a monthly tenant at {holdover} of the Base Rent then in effect.",
        "This Lease is subordinate to every mortgage now or later registered against {building}.",
        "Within {num} business days of a request, the Tenant shall deliver an estoppel certificate confirming the status of this Lease.",
        "Time is of the essence of this Lease and of each of its provisions.",
        "The headings in this Lease are for convenience of reference only and do not affect its interpretation.",
        "The rentable area of the Premises has been measured at {sqft} square feet in accordance with the applicable measurement standard.",
        "The Landlord's cleaning service includes {cleaning}, performed {frequency}.",
        "Rent for any partial month shall be prorated on a daily basis.",
        "All amounts payable by the Tenant under this Lease are exclusive of applicable sales taxes.",
        "The Tenant accepts the {area} in its present condition, having inspected it before signing.",
        "The Landlord shall complete the {work} before the Commencement Date at its own expense.",
        "Any dispute about operating expenses shall be referred to an independent accountant appointed by {landlord}.",
        "The Tenant shall deliver to the Landlord, on request, a copy of its most recent {report}.",
        "The Premises are located on the {floor} floor of {building}, {address}.",
        "Questions about building operations should be addressed to {manager}, the property manager.",
        "The Landlord does not warrant that the {area} is suitable for the Tenant's particular purpose.",
        "Waiver of any default shall not be deemed a waiver of any subsequent default.",
        "The Tenant shall promptly notify the Landlord of any {defect} in or about the Premises.",
    ),
    bullets=(
        ("Operating expenses include, without limitation:", "expense"),
        ("The Tenant shall deliver the following before taking possession:", "deliverable"),
        ("The following events are each an event of default:", "default"),
        ("The Landlord's work comprises:", "work"),
    ),
    tables=(
        (("Item", "Responsibility", "Frequency"), ("{maint}", "{resp}", "{frequency}")),
        (("Floor", "Rentable area (sq ft)", "Permitted use"), ("{floor}", "{sqft}", "{use}")),
    ),
    slots={
        "area": (
            "leased premises",
            "loading dock",
            "storage room",
            "mezzanine",
            "reception area",
            "shipping area",
            "server room",
        ),
        "fixture": (
            "shelving",
            "partition",
            "lighting fixture",
            "security system",
            "kitchenette",
            "server rack",
        ),
        "expense": (
            "property taxes",
            "insurance premiums",
            "snow removal",
            "landscaping",
            "security patrols",
            "elevator maintenance",
            "window cleaning",
            "waste collection",
            "common area lighting",
        ),
        "use": (
            "general office purposes",
            "a dental clinic",
            "light warehousing",
            "a retail bakery",
            "a fitness studio",
            "a design studio",
            "a medical imaging clinic",
            "an engineering office",
        ),
        "utility": (
            "heating",
            "air conditioning",
            "ventilation",
            "elevator service",
            "domestic water",
        ),
        "hours": (
            "7:00 a.m. to 6:00 p.m. on weekdays",
            "8:00 a.m. to 8:00 p.m. Monday to Saturday",
            "6:30 a.m. to 7:00 p.m. on business days",
        ),
        "parking": ("underground garage", "surface lot", "north parking structure", "visitor lot"),
        "sign": ("building directory", "exterior fascia", "pylon sign", "suite entrance door"),
        "holdover": ("125%", "150%", "175%", "200%"),
        "interest": (
            "prime plus 3% per annum",
            "8% per annum",
            "1.5% per month",
            "the bank rate plus 5% per annum",
        ),
        "sqft": tuple(f"{n:,}" for n in range(1_150, 28_000, 370)),
        "cleaning": (
            "vacuuming of carpets",
            "emptying of waste bins",
            "washroom sanitation",
            "dusting of horizontal surfaces",
        ),
        "frequency": ("nightly", "weekly", "monthly", "quarterly", "twice a year", "annually"),
        "work": (
            "demising walls",
            "new ceiling tiles",
            "upgraded washrooms",
            "a barrier-free entrance",
            "replacement of the rooftop unit",
            "fresh paint throughout",
        ),
        "report": (
            "audited financial statements",
            "certificate of insurance",
            "annual sustainability report",
            "business licence",
        ),
        "floor": ("ground", "second", "third", "fourth", "fifth", "seventh", "ninth"),
        "defect": (
            "water leak",
            "electrical fault",
            "damage to the building systems",
            "pest infestation",
            "broken window",
        ),
        "deliverable": (
            "a certificate of insurance",
            "the first instalment of Base Rent",
            "the security deposit",
            "a list of authorised signatories",
            "emergency contact details",
        ),
        "default": (
            "failure to pay Rent when due",
            "insolvency of the Tenant",
            "abandonment of the Premises",
            "breach of the use clause",
            "an unpermitted assignment",
        ),
        "maint": (
            "HVAC filters",
            "fire extinguishers",
            "roof membrane",
            "parking lot sweeping",
            "exterior windows",
            "plumbing fixtures",
            "emergency lighting",
        ),
        "resp": ("Landlord", "Tenant", "Landlord, recoverable", "Tenant, at its cost"),
    },
    fields=(
        FieldSpec(
            "tenant_name",
            "Legal name of the tenant (the lessee) that is party to this lease, as written.",
            lambda r, e: distinct(r, company, {e["landlord"]}),
            (
                "This Lease is made between {landlord}, as landlord, and {value}, as tenant.",
                "The Tenant under this Lease is {value}, a corporation in good standing.",
                "For all purposes of this Lease, the Tenant means {value} and its permitted successors.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, company, {v, e["landlord"]}),
                    (
                        "The Premises were previously leased to {value}, whose tenancy ended before the Commencement Date.",
                        "An earlier draft of this Lease named {value} as tenant; that draft is of no effect.",
                    ),
                ),
                Distractor(
                    "other_entity",
                    lambda r, e, v: distinct(r, company, {v, e["landlord"]}),
                    (
                        "The adjoining suite is occupied by {value}, which is not a party to this Lease.",
                        "The obligations of the Tenant are guaranteed by {value}, as indemnifier.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "monthly_rent",
            "Monthly base rent the tenant pays during the initial term, as written (e.g. $4,250).",
            lambda r, e: money(r, 1_800, 24_000, 25),
            (
                "The Tenant shall pay monthly Base Rent of {value} during the initial Term, in advance on the first day of each month.",
                "Base Rent for the initial Term is {value} per month, payable without deduction or set-off.",
            ),
            (
                Distractor(
                    "near_miss",
                    lambda r, e, v: near_miss(r, v),
                    (
                        "During any renewal term the monthly Base Rent shall be {value}, subject to review.",
                        "The monthly Base Rent of {value} quoted in the letter of intent is superseded by this Lease.",
                    ),
                ),
                Distractor(
                    "other_entity",
                    lambda r, e, v: near_miss(r, v),
                    (
                        "The Tenant shall deposit {value} with the Landlord as a security deposit on signing.",
                        "The monthly rent for the storage locker, if taken, is {value}.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "notice_period_days",
            "Number of days of prior written notice the tenant must give to terminate or not renew the lease (digits only, e.g. 90).",
            lambda r, e: r.choice(("30", "45", "60", "90", "120", "180")),
            (
                "The Tenant may terminate this Lease at the end of the initial Term by giving the Landlord not less than {value} days' prior written notice.",
                "Notice of non-renewal must be given by the Tenant in writing at least {value} days before the expiry of the Term.",
            ),
            (
                Distractor(
                    "other_entity",
                    lambda r, e, v: distinct(
                        r, lambda q: q.choice(("2", "5", "10", "15", "21")), {v, e["term_years"]}
                    ),
                    (
                        "Except in an emergency, the Landlord shall give the Tenant at least {value} days' notice before entering the Premises for non-routine work.",
                        "If the Tenant fails to cure a default within {value} days after written notice from the Landlord, the Landlord may re-enter.",
                    ),
                ),
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(
                        r, lambda q: q.choice(("30", "45", "60", "90", "120", "180")), {v}
                    ),
                    (
                        "Under the prior lease of the Premises, the notice period for termination was {value} days; that lease has been surrendered.",
                    ),
                ),
            ),
        ),
    ),
)


# --- annual reports ----------------------------------------------------------------------


def _report_entities(rng: random.Random) -> Ents:
    name = f"{rng.choice(PLACE)} {rng.choice(('Holdings', 'Industries', 'Group', 'Resources', 'Brands'))}"
    return {
        "company": f"{name} {rng.choice(('plc', 'Inc.', 'Ltd.', 'N.V.'))}",
        "ceo": person(rng),
        "chair": person(rng),
        "cfo": person(rng),
        "segment": rng.sample(
            (
                "Industrial",
                "Consumer",
                "Healthcare",
                "Energy Services",
                "Packaging",
                "Digital",
                "Infrastructure",
                "Specialty Materials",
            ),
            3,
        ),
        "region": rng.sample(
            (
                "North America",
                "Northern Europe",
                "Southeast Asia",
                "Latin America",
                "the Middle East",
                "Australia",
                "Central Europe",
            ),
            3,
        ),
    }


def _auditor(rng: random.Random) -> str:
    a, b = rng.sample(LAST, 2)
    return f"{a} {rng.choice(('&', 'and'))} {b} {rng.choice(('LLP', 'Audit LLP', 'Chartered Accountants'))}"


def _year_end(rng: random.Random) -> str:
    return f"{rng.choice(('March 31', 'June 30', 'September 30', 'December 31'))}, {rng.randint(2018, 2024)}"


def _prior_year_end(rng: random.Random, ents: Ents, value: str) -> str:
    day, year = value.rsplit(", ", 1)
    return f"{day}, {int(year) - 1}"


def _changed_year_end(rng: random.Random, ents: Ents, value: str) -> str:
    day, year = value.rsplit(", ", 1)
    other = rng.choice(
        [d for d in ("March 31", "June 30", "September 30", "December 31") if d != day]
    )
    return f"{other}, {int(year) - rng.randint(1, 3)}"


REPORT = DomainSpec(
    name="report",
    entities=_report_entities,
    opening=(
        "# {company} Annual Report and Accounts",
        "This annual report of {company} sets out the Group's strategy, performance, governance "
        "and financial statements for the year.",
        "Chair: {chair}. Chief Executive: {ceo}. Chief Financial Officer: {cfo}.",
    ),
    closing=(
        "# Shareholder Information",
        "The annual report was approved by the Board of Directors and signed on its behalf by "
        "{chair}, Chair, and {cfo}, Chief Financial Officer.",
        "Copies of this report are available from the Company Secretary and on the Group's website.",
    ),
    sections=(
        "Chair's Statement",
        "Chief Executive's Review",
        "Strategic Report",
        "Business Model",
        "Segment Performance",
        "Financial Review",
        "Risk Management",
        "Principal Risks and Uncertainties",
        "Sustainability",
        "Our People",
        "Corporate Governance",
        "Board of Directors",
        "Audit Committee Report",
        "Remuneration Report",
        "Directors' Report",
        "Statement of Directors' Responsibilities",
        "Independent Auditor's Report",
        "Consolidated Income Statement",
        "Consolidated Balance Sheet",
        "Notes to the Financial Statements",
    ),
    sentences=(
        "Operating margin in the {segment} segment improved to {pct}, reflecting {driver}.",
        "Net debt at the year end stood at {money_m}, equivalent to {ratio} times adjusted EBITDA.",
        "The Board has recommended a final dividend of {cents} cents per share.",
        "Capital expenditure of {money_m} was focused on {capex}.",
        "Headcount rose to {headcount} employees across {num} countries.",
        "The Group's exposure to {risk} is monitored by the Risk Committee on a {cadence} basis.",
        "During the year the Group completed the acquisition of {company_b}, which contributed {money_m} of revenue.",
        "Order intake in {segment} grew by {pct} year on year, led by demand in {region}.",
        "Adjusted earnings per share were {cents} cents, {updown} {pct} on the previous year.",
        "The effective tax rate for the year was {tax_pct}.",
        "Employee engagement scores reached {high_pct} in the annual survey.",
        "Scope 1 and 2 emissions fell by {pct} against the {year} baseline.",
        "The Audit Committee met {times} times during the year and reviewed {audit_topic}.",
        "{person} joined the Board as an independent non-executive director on {date}.",
        "Cash generated from operations was {money_m}, a cash conversion rate of {pct}.",
        "The Group maintains a revolving credit facility of {money_m} maturing in {year}.",
        "Goodwill is tested for impairment annually and whenever there is an indication that it may be impaired.",
        "Inventories are stated at the lower of cost and net realisable value.",
        "Foreign currency transactions are translated at the exchange rate ruling at the date of the transaction.",
        "Key judgements in the period related to {judgement}.",
        "Our {segment} business opened {num} new facilities in {region}.",
        "Gross margin {moved} to {pct}, helped by {driver}.",
        "The directors consider that the annual report, taken as a whole, is fair, balanced and understandable.",
        "{ceo}, Chief Executive, said the year had tested the resilience of every part of the business.",
        "Research and development spending amounted to {money_m}, or {pct} of sales.",
        "The share price closed the period at ${price}, giving a market capitalisation of {money_m}.",
        "Supplier payment days averaged {num} days during the period.",
        "No director had a material interest in any contract of significance with the Group.",
        "Principal risks are assessed against the Board's risk appetite and reviewed at every meeting.",
        "The order backlog of the {segment} segment at the period end was {money_m}.",
        "{cfo}, Chief Financial Officer, noted that working capital discipline had improved across {region}.",
        "Lease liabilities are measured at the present value of the remaining lease payments.",
        "The pension scheme recorded an accounting surplus of {money_m} at the balance sheet date.",
        "Restructuring costs of {money_m} related mainly to {restructuring}.",
        "The Remuneration Committee approved a salary increase of {raise_pct} for the executive directors.",
        "Customer satisfaction in {region} remained above {high_pct} throughout the period.",
    ),
    bullets=(
        ("Our strategic priorities for the coming year are:", "priority"),
        ("The principal risks identified by the Board include:", "risk"),
        ("The Audit Committee's work during the year covered:", "audit_topic"),
    ),
    tables=(
        (("Segment", "Operating margin", "Employees"), ("{segment}", "{pct}", "{headcount}")),
        (("Measure", "Current period", "Change"), ("{measure}", "{money_m}", "{pct}")),
    ),
    slots={
        "driver": (
            "pricing discipline",
            "lower freight costs",
            "a richer product mix",
            "the benefit of restructuring",
            "higher plant utilisation",
            "easing input cost inflation",
        ),
        "ratio": ("0.8", "1.1", "1.4", "1.7", "2.0", "2.3", "2.6"),
        "cents": tuple(f"{n}.{d}" for n in range(3, 60, 4) for d in (1, 4, 7)),
        "capex": (
            "automation of the main plant",
            "the new distribution centre",
            "IT systems",
            "capacity expansion in Asia",
            "energy efficiency projects",
        ),
        "headcount": tuple(f"{n:,}" for n in range(1_240, 48_000, 913)),
        "risk": (
            "foreign exchange movements",
            "cyber security threats",
            "supply chain disruption",
            "regulatory change",
            "key customer concentration",
            "climate-related physical risk",
            "interest rate movements",
        ),
        "cadence": ("monthly", "quarterly", "half-yearly", "continuous"),
        "company_b": tuple(
            f"{p} {t} Ltd." for p in PLACE[:8] for t in ("Controls", "Coatings", "Systems")
        ),
        "updown": ("up", "down"),
        "moved": ("rose", "fell", "improved", "edged down"),
        "times": ("four", "five", "six", "seven", "eight"),
        "high_pct": tuple(f"{n}%" for n in range(78, 98)),
        "raise_pct": ("2.0%", "2.5%", "3.0%", "3.5%", "4.0%", "5.0%"),
        "tax_pct": tuple(f"{n}.{d}%" for n in range(17, 31) for d in (0, 5)),
        "audit_topic": (
            "the going concern assessment",
            "revenue recognition on long-term contracts",
            "the valuation of goodwill",
            "the effectiveness of internal controls",
            "the internal audit plan",
            "tax provisions",
        ),
        "judgement": (
            "the recognition of deferred tax assets",
            "provisions for legal claims",
            "the useful lives of intangible assets",
            "the discount rate applied to pension liabilities",
        ),
        "price": tuple(f"{n}.{d:02d}" for n in range(4, 90, 7) for d in (5, 40, 85)),
        "restructuring": (
            "the closure of two warehouses",
            "the consolidation of back-office functions",
            "the exit from a loss-making product line",
        ),
        "priority": (
            "disciplined capital allocation",
            "growth in adjacent markets",
            "operational excellence in every plant",
            "reducing carbon intensity",
            "developing our people",
            "digital customer service",
        ),
        "measure": (
            "Operating profit",
            "Free cash flow",
            "Capital expenditure",
            "Net debt",
            "Adjusted EBITDA",
            "Dividends paid",
        ),
    },
    fields=(
        FieldSpec(
            "auditor",
            "Name of the independent audit firm that audited this year's financial statements (the current auditor).",
            lambda r, e: _auditor(r),
            (
                "The consolidated financial statements for the year have been audited by {value}, whose report appears in this section.",
                "Shareholders reappointed {value} as the Group's independent auditor at the last annual general meeting.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, _auditor, {v}),
                    (
                        "The former auditor, {value}, was replaced following a competitive tender and did not audit this year's accounts.",
                        "Until the tender process concluded, the Group's auditor had been {value}.",
                    ),
                ),
                Distractor(
                    "other_entity",
                    lambda r, e, v: distinct(r, _auditor, {v}),
                    (
                        "{value} provided tax advisory services to the Group during the year and is independent of the audit.",
                        "The pension scheme's own accounts are audited separately by {value}.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "fiscal_year_end",
            "Last day of the fiscal year this report covers, as written (e.g. June 30, 2024).",
            lambda r, e: _year_end(r),
            (
                "These financial statements cover the fiscal year ended {value}.",
                "The Group's current reporting period is the twelve months ended {value}.",
            ),
            (
                Distractor(
                    "superseded",
                    _prior_year_end,
                    ("Comparative figures are presented for the fiscal year ended {value}.",),
                ),
                Distractor(
                    "superseded",
                    _changed_year_end,
                    (
                        "Before the change of accounting reference date, the fiscal year ended on {value}.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "total_revenue",
            "Total consolidated revenue of the group for the fiscal year this report covers, as written (e.g. $412.6 million).",
            lambda r, e: millions(r, 120, 4_800),
            (
                "Total revenue for the year was {value}, driven by growth in every region.",
                "Group revenue for the period reached {value} on a reported basis.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: near_miss(r, v),
                    ("Total revenue for the previous fiscal year was {value}, as restated.",),
                ),
                Distractor(
                    "near_miss",
                    lambda r, e, v: near_miss(r, v),
                    (
                        "The medium-term plan set a total revenue target of {value}.",
                        "Revenue of the largest segment alone amounted to {value}.",
                    ),
                ),
            ),
        ),
    ),
)


# --- equipment service manuals -----------------------------------------------------------


def _model_number(rng: random.Random) -> str:
    letters = "".join(rng.sample("ABCDEFGHKLMNPRSTVXZ", 2))
    return f"{letters}-{rng.randint(12, 98)}{rng.choice(('00', '50', '20', '40'))}{rng.choice(('', 'B', 'E', 'S', 'X'))}"


def _manual_entities(rng: random.Random) -> Ents:
    product = rng.choice(("rotary screw compressor", "hydraulic power unit", "industrial chiller", "centrifugal pump skid", "vacuum pump station", "air dryer package"))  # fmt: skip
    return {
        "manufacturer": f"{rng.choice(PLACE)} {rng.choice(('Industrial Systems', 'Fluid Power', 'Machinery', 'Process Equipment'))}",
        "product": product,
        "docno": f"SM-{rng.randint(1000, 9999)}",
        "rev": rng.choice("ABCDEFG"),
        "partno": _model_number(rng),
    }


MANUAL = DomainSpec(
    name="manual",
    entities=_manual_entities,
    opening=(
        "# {manufacturer} Service Manual",
        "Service manual for the {product}. Document {docno}, revision {rev}. Read this manual "
        "completely before installing, operating or servicing the unit.",
        "Keep this manual with the unit for the life of the equipment.",
    ),
    closing=(
        "# Service and Support",
        "For technical support, spare parts and service training, contact the {manufacturer} "
        "service department or an authorised distributor, quoting the serial number of the unit.",
        "End of document {docno}, revision {rev}.",
    ),
    sections=(
        "Safety Information",
        "Product Overview",
        "Technical Specifications",
        "Installation",
        "Electrical Connections",
        "Commissioning",
        "Operation",
        "Control Panel",
        "Alarms and Fault Codes",
        "Routine Maintenance",
        "Lubrication",
        "Filters and Separators",
        "Cooling System",
        "Troubleshooting",
        "Spare Parts",
        "Storage and Transport",
        "Decommissioning and Disposal",
        "Warranty",
    ),
    sentences=(
        "Before opening the {component} cover, isolate the unit from the electrical supply and lock out the main disconnect.",
        "Check the {component} for signs of wear, leakage or discolouration at every inspection.",
        "Tighten the {fastener} to {torque} N·m using a calibrated torque wrench.",
        "The ambient temperature at the installation site must remain between {temp_lo} °C and {temp_hi} °C.",
        "Allow at least {mm} mm of clearance on all sides of the unit for ventilation and service access.",
        "Fault code E{num3} indicates {fault}; {action}.",
        "Use only {lubricant} approved by {manufacturer}; mixing lubricants may damage the {component}.",
        "Record every maintenance activity in the service log supplied with the unit.",
        "Drain condensate from the {component} daily, or fit an automatic drain valve.",
        "When the differential pressure across the {filter} exceeds {bar} bar, replace the element.",
        "The unit must be installed on a level concrete base able to support {kg} kg.",
        "Supply voltage must not deviate by more than {pct} from the rating on the data plate.",
        "Do not operate the unit with any guard or panel removed.",
        "The {sensor} signals the controller to {ctrl_action} when its set point is reached.",
        "During commissioning, verify the direction of rotation of the {motor} by briefly jogging it.",
        "Sound pressure measured at one metre is {db} dB(A) under rated conditions.",
        "Replace the {consumable} at the intervals in the maintenance schedule, or sooner in dusty conditions.",
        "Only personnel trained by {manufacturer} or an authorised distributor may carry out electrical work on the {product}.",
        "If the unit will be stored for more than {num} weeks, fill the {component} with preservation oil.",
        "The controller keeps the last {num} alarm events, which can be viewed from the service menu.",
        "Press and hold the {button} button for {num} seconds to reset a latched alarm.",
        "Warranty claims must include the serial number and a copy of the commissioning report.",
        "Inspect the {hose} for cracking and replace any hose that shows damage.",
        "The oil level should be between the minimum and maximum marks on the sight glass when the unit is stopped.",
        "High discharge temperature is usually caused by {cause}.",
        "Connect the unit to a dedicated circuit protected by a {amps} A fuse.",
        "Lifting points are marked on the frame; never lift the {product} by its pipework.",
        "After replacing the {consumable}, run the unit for {num} minutes and check for leaks.",
        "The display shows {display} while the unit is in standby mode.",
        "Wear eye protection and gloves when handling {lubricant}.",
        "Vibration above {vib} mm/s at the {motor} bearings indicates misalignment or bearing wear.",
        "The {sensor} must be recalibrated after any repair to the {component}.",
        "Dispose of used filters and oil in accordance with local environmental regulations.",
        "Spare parts lists for the {component} are given in the parts catalogue for this document.",
    ),
    bullets=(
        ("Before starting the unit for the first time, check:", "check"),
        ("Possible causes of this fault include:", "cause"),
        ("Personal protective equipment required for this task:", "ppe"),
    ),
    tables=(
        (("Task", "Interval", "Notes"), ("{task}", "{interval}", "{note}")),
        (("Fault code", "Meaning", "Action"), ("E{num3}", "{fault}", "{action}")),
    ),
    slots={
        "component": (
            "separator tank",
            "cooler core",
            "drive coupling",
            "intake valve",
            "oil reservoir",
            "control cabinet",
            "motor terminal box",
            "heat exchanger",
        ),
        "fastener": (
            "coupling bolts",
            "motor mounting bolts",
            "cylinder head screws",
            "flange bolts",
            "terminal nuts",
        ),
        "torque": ("12", "25", "40", "55", "85", "110"),
        "temp_lo": ("1", "2", "5"),
        "temp_hi": ("40", "45", "46", "50"),
        "mm": ("300", "450", "600", "800", "1,000"),
        "fault": (
            "high discharge temperature",
            "motor overload",
            "low oil pressure",
            "phase sequence error",
            "sensor failure",
            "emergency stop activated",
            "high differential pressure",
        ),
        "action": (
            "check the cooling air flow",
            "reset the overload relay and check the supply",
            "check the oil level",
            "swap two supply phases",
            "replace the sensor",
            "release the emergency stop",
            "replace the filter element",
        ),
        "lubricant": (
            "synthetic compressor oil",
            "food-grade lubricant",
            "mineral hydraulic oil",
            "high-temperature bearing grease",
        ),
        "filter": ("oil filter", "air intake filter", "return-line filter", "separator element"),
        "bar": ("0.5", "0.7", "0.8", "1.0", "1.2"),
        "kg": ("420", "780", "1,150", "1,450", "2,300"),
        "sensor": ("pressure transducer", "temperature probe", "level switch", "flow sensor"),
        "ctrl_action": (
            "unload the compressor",
            "start the cooling fan",
            "stop the pump",
            "open the bypass valve",
            "raise an alarm",
        ),
        "motor": ("main motor", "fan motor", "pump motor"),
        "db": ("68", "71", "74", "77", "79"),
        "consumable": (
            "oil filter",
            "air filter",
            "separator element",
            "drive belt",
            "desiccant cartridge",
            "gasket set",
        ),
        "button": ("RESET", "MENU", "STOP", "ENTER"),
        "hose": ("suction hose", "discharge hose", "oil return hose", "drain line"),
        "cause": (
            "a blocked cooler",
            "low oil level",
            "high ambient temperature",
            "a faulty thermostatic valve",
            "a clogged intake filter",
            "incorrect oil grade",
        ),
        "amps": ("16", "25", "32", "40", "63"),
        "display": ("READY", "STANDBY", "AUTO", "REMOTE"),
        "vib": ("4.5", "7.1", "11.2"),
        "check": (
            "the oil level",
            "the direction of rotation",
            "that all guards are fitted",
            "the supply voltage",
            "that transport locks are removed",
            "that the discharge valve is open",
        ),
        "ppe": (
            "safety glasses",
            "hearing protection",
            "chemical-resistant gloves",
            "safety footwear",
            "a face shield",
        ),
        "task": (
            "Check oil level",
            "Replace oil filter",
            "Clean cooler",
            "Inspect drive belt",
            "Test safety valve",
            "Replace air filter",
            "Check electrical connections",
        ),
        "interval": ("daily", "weekly", "monthly", "every 3 months", "every 6 months", "annually"),
        "note": (
            "with the unit stopped",
            "replace if damaged",
            "record in the service log",
            "use genuine parts",
            "more often in dusty sites",
        ),
    },
    fields=(
        FieldSpec(
            "model_number",
            "Model number of the equipment this manual covers, as written (e.g. HX-4200B).",
            lambda r, e: distinct(r, _model_number, {e["partno"]}),
            (
                "This manual applies to the {product} model {value} and to all serial numbers listed in the appendix.",
                "The equipment described in this manual is the {product}, model {value}.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, _model_number, {v, e["partno"]}),
                    (
                        "This manual supersedes the manual for the earlier model {value}, which is no longer supported.",
                        "Units of the previous model {value} must not be serviced with the procedures in this manual.",
                    ),
                ),
                Distractor(
                    "near_miss",
                    lambda r, e, v: e["partno"],
                    (
                        "Replacement drive assemblies are ordered under part number {value}.",
                        "The optional remote control kit carries part number {value}.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "service_interval_hours",
            "Operating hours between scheduled full services of the unit (digits only, e.g. 500).",
            lambda r, e: str(r.randrange(250, 950, 50)),
            (
                "A full scheduled service must be carried out every {value} operating hours or once a year, whichever comes first.",
                "The recommended interval between full services is {value} operating hours.",
            ),
            (
                Distractor(
                    "near_miss",
                    lambda r, e, v: distinct(r, lambda q: str(q.randrange(50, 240, 10)), {v}),
                    ("Inspect and clean the air intake filter every {value} operating hours.",),
                ),
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, lambda q: str(q.randrange(250, 950, 50)), {v}),
                    (
                        "Units built before the current revision required a full service every {value} operating hours.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "max_operating_pressure",
            "Maximum operating pressure of the unit, with its unit, as written (e.g. 150 psi).",
            lambda r, e: f"{r.randrange(90, 300, 5)} psi",
            (
                "The maximum operating pressure of the system is {value}; never exceed it.",
                "Do not operate the unit above its maximum operating pressure of {value}.",
            ),
            (
                Distractor(
                    "near_miss",
                    lambda r, e, v: f"{int(v.split()[0]) + r.randrange(10, 40, 5)} psi",
                    (
                        "The safety relief valve is factory set to open at {value}.",
                        "During the factory proof test the pressure vessel is held at {value} for ten minutes.",
                    ),
                ),
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, lambda q: f"{q.randrange(90, 300, 5)} psi", {v}),
                    ("Earlier production units were rated for a maximum of {value}.",),
                ),
            ),
        ),
    ),
)


# --- clinical study protocols ------------------------------------------------------------


def _protocol_entities(rng: random.Random) -> Ents:
    return {
        "sponsor": f"{rng.choice(PLACE)} {rng.choice(('Therapeutics', 'Biosciences', 'Pharma', 'Medical'))}",
        "drug": f"{''.join(rng.sample('BDKLMRTVXZ', 2))}-{rng.randint(1001, 9899)}",
        "condition": rng.choice(
            (
                "moderate to severe plaque psoriasis",
                "type 2 diabetes",
                "chronic migraine",
                "mild asthma",
                "knee osteoarthritis",
                "major depressive disorder",
                "rheumatoid arthritis",
            )
        ),
        "site": f"{rng.choice(PLACE)} {rng.choice(('University Hospital', 'Medical Centre', 'Clinical Research Unit'))}",
        "protocol_no": f"{''.join(rng.sample('ABCDEFGHKLMNPRSTVXZ', 3))}-{rng.randint(2016, 2024)}-{rng.randint(1, 60):03d}",
    }


PROTOCOL = DomainSpec(
    name="protocol",
    entities=_protocol_entities,
    opening=(
        "# Clinical Study Protocol {protocol_no}",
        "A randomised, double-blind, placebo-controlled study of {drug} in adults with "
        "{condition}. Sponsor: {sponsor}.",
        "This protocol contains confidential information and is provided to investigators, "
        "ethics committees and regulatory authorities only.",
    ),
    closing=(
        "# Investigator's Agreement",
        "I have read this protocol and agree to conduct the study as described, in accordance "
        "with Good Clinical Practice and all applicable regulatory requirements.",
        "Protocol {protocol_no}, sponsored by {sponsor}.",
    ),
    sections=(
        "Synopsis",
        "Background and Rationale",
        "Objectives and Endpoints",
        "Study Design",
        "Study Population",
        "Inclusion Criteria",
        "Exclusion Criteria",
        "Study Treatment",
        "Randomisation and Blinding",
        "Schedule of Assessments",
        "Safety Monitoring",
        "Adverse Event Reporting",
        "Statistical Considerations",
        "Data Management",
        "Ethics and Regulatory Considerations",
        "Informed Consent",
        "Quality Assurance",
        "Publication Policy",
    ),
    sentences=(
        "Participants will receive {drug} {dose} mg or matching placebo {dosing}.",
        "Vital signs, including blood pressure and heart rate, will be recorded at each visit.",
        "Serious adverse events must be reported to {sponsor} within 24 hours of the investigator becoming aware of them.",
        "Blood samples for {lab} will be collected at screening and at the end of treatment.",
        "Eligible participants must be aged {age_lo} to {age_hi} years at the time of consent.",
        "Participants who have received {prior_tx} within the last {num} weeks are excluded.",
        "Randomisation will be stratified by {strat} using an interactive web response system.",
        "Investigators, site staff and participants will remain blinded to treatment allocation until database lock.",
        "Concomitant use of {conmed} is prohibited throughout the treatment period.",
        "An electrocardiogram will be performed {ecg_timing}.",
        "Pregnancy testing is required for participants of childbearing potential at every study visit.",
        "The primary analysis will use the {population} population.",
        "Missing data will be handled by {imputation}.",
        "A two-sided significance level of {alpha} will be used for the primary comparison.",
        "Source data will be entered into the electronic case report form within {num} days of each visit.",
        "Monitoring visits will be conducted by {sponsor} or its delegate at regular intervals.",
        "The protocol and informed consent form have been approved by the {committee} of {site}.",
        "Participants may withdraw consent at any time without affecting their future medical care.",
        "Adherence will be assessed by counting returned {supply} at each visit.",
        "Treatment-emergent adverse events will be summarised by system organ class and preferred term.",
        "The {endpoint} will be analysed using {model}.",
        "Study drug must be stored at {storage} in a locked area with restricted access.",
        "Dose interruption is permitted for {reason}, as described in the treatment section.",
        "Quality of life will be measured with the {qol} questionnaire at baseline and at the end of treatment.",
        "Investigators must retain essential documents for at least {num} years after completion of the study.",
        "{condition} affects an estimated {pct} of adults, and current treatments leave many patients with persistent symptoms.",
        "Preclinical studies of {drug} demonstrated {finding}.",
        "Interim safety data will be reviewed by the Data Safety Monitoring Board at pre-specified milestones.",
        "Each site must maintain a delegation log signed by the site investigator.",
        "Participants will be reimbursed for reasonable travel expenses in line with the approval of the {committee}.",
        "The {endpoint} is defined as the change from baseline in {score}.",
        "Rescue medication with {rescue} is permitted and must be recorded in the case report form.",
        "Protocol deviations will be classified as major or minor and reported to {sponsor}.",
        "Screening assessments must be completed within {num} days before randomisation.",
    ),
    bullets=(
        ("Participants are eligible if they meet all of the following:", "inclusion"),
        ("Participants are excluded if any of the following apply:", "exclusion"),
        ("The secondary endpoints of the study are:", "endpoint"),
    ),
    tables=(
        (("Visit", "Window", "Assessments"), ("{visit}", "{window}", "{lab}")),
        (("Arm", "Treatment", "Dosing"), ("{arm}", "{drug} {dose} mg", "{dosing}")),
    ),
    slots={
        "dose": ("5", "10", "20", "40", "75", "150", "300"),
        "dosing": (
            "once daily",
            "twice daily",
            "once weekly",
            "every two weeks by subcutaneous injection",
        ),
        "lab": (
            "haematology",
            "clinical chemistry",
            "pharmacokinetics",
            "biomarker analysis",
            "urinalysis",
            "lipid profile",
        ),
        "age_lo": ("18", "21", "40"),
        "age_hi": ("65", "70", "75", "80"),
        "prior_tx": (
            "systemic corticosteroids",
            "biologic therapy",
            "an investigational product",
            "live vaccines",
            "immunosuppressants",
        ),
        "strat": ("site and baseline severity", "age group", "prior biologic use", "region"),
        "conmed": (
            "strong CYP3A4 inhibitors",
            "other biologic agents",
            "systemic retinoids",
            "warfarin",
            "St John's wort",
        ),
        "ecg_timing": (
            "at screening and at the final visit",
            "before and two hours after the first dose",
            "at every scheduled visit",
        ),
        "population": (
            "intention-to-treat",
            "modified intention-to-treat",
            "per-protocol",
            "safety",
        ),
        "imputation": (
            "multiple imputation under a missing-at-random assumption",
            "non-responder imputation",
            "a mixed model for repeated measures",
        ),
        "alpha": ("0.05", "0.025", "0.01"),
        "committee": (
            "Research Ethics Committee",
            "Institutional Review Board",
            "Human Research Ethics Board",
        ),
        "supply": ("tablets", "capsules", "pre-filled syringes", "inhaler canisters"),
        "endpoint": (
            "primary endpoint",
            "key secondary endpoint",
            "exploratory endpoint",
            "time to first relapse",
            "proportion of responders",
        ),
        "model": (
            "an analysis of covariance adjusted for baseline",
            "a Cox proportional hazards model",
            "logistic regression",
            "a stratified log-rank test",
        ),
        "storage": ("2 to 8 °C", "room temperature below 25 °C", "minus 20 °C"),
        "reason": (
            "grade 3 laboratory abnormalities",
            "intercurrent infection",
            "elective surgery",
            "suspected drug-induced liver injury",
        ),
        "qol": ("EQ-5D-5L", "SF-36", "DLQI", "PHQ-9"),
        "finding": (
            "dose-dependent target engagement",
            "no off-target toxicity at ten times the human dose",
            "good oral bioavailability",
            "a half-life supporting once-daily dosing",
        ),
        "score": (
            "the disease activity score",
            "the symptom severity index",
            "HbA1c",
            "monthly headache days",
            "the pain subscale",
        ),
        "rescue": (
            "paracetamol",
            "short-acting bronchodilators",
            "topical corticosteroids",
            "triptans",
        ),
        "inclusion": (
            "a confirmed diagnosis for at least six months",
            "stable background therapy",
            "written informed consent",
            "adequate renal function",
            "willingness to use contraception",
        ),
        "exclusion": (
            "pregnancy or breastfeeding",
            "active tuberculosis",
            "a history of malignancy",
            "uncontrolled hypertension",
            "participation in another trial",
        ),
        "visit": (
            "Screening",
            "Baseline",
            "Treatment visit",
            "End of treatment",
            "Safety follow-up",
            "Unscheduled",
        ),
        "window": ("within 28 days", "day 1", "plus or minus 3 days", "plus or minus 7 days"),
        "arm": ("Arm A", "Arm B", "Arm C", "Placebo"),
    },
    fields=(
        FieldSpec(
            "principal_investigator",
            "Full name (without title) of the study's current principal investigator, as written.",
            lambda r, e: person(r),
            (
                "The principal investigator for this study is Dr. {value} of {site}.",
                "Dr. {value} is the principal investigator and is responsible for the conduct of the study at all sites.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, person, {v}),
                    (
                        "Dr. {value}, who served as principal investigator during the pilot phase, has since left {site}.",
                        "Protocol version 1.0 named Dr. {value} as principal investigator; that appointment has ended.",
                    ),
                ),
                Distractor(
                    "other_entity",
                    lambda r, e, v: distinct(r, person, {v}),
                    (
                        "Dr. {value} chairs the independent Data Safety Monitoring Board.",
                        "The medical monitor for {sponsor} is Dr. {value}.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "target_enrollment",
            "Total number of participants the study plans to enrol, as written (digits).",
            lambda r, e: str(r.randrange(60, 900, 12)),
            (
                "A total of {value} participants will be enrolled across all sites.",
                "The planned sample size is {value} participants, which provides adequate power for the primary endpoint.",
            ),
            (
                Distractor(
                    "near_miss",
                    lambda r, e, v: str(int(v) + r.randrange(40, 400, 8)),
                    (
                        "Approximately {value} participants are expected to be screened to reach the enrolment target.",
                    ),
                ),
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, lambda q: str(q.randrange(20, 80, 4)), {v}),
                    ("The earlier pilot study of {drug} enrolled {value} participants.",),
                ),
            ),
        ),
        FieldSpec(
            "follow_up_weeks",
            "Duration of participant follow-up after randomisation, in weeks (digits only).",
            lambda r, e: r.choice(("12", "24", "26", "36", "48", "52", "78", "104")),
            (
                "Each participant will be followed for {value} weeks after randomisation.",
                "The follow-up period lasts {value} weeks from randomisation for every participant.",
            ),
            (
                Distractor(
                    "near_miss",
                    lambda r, e, v: distinct(r, lambda q: q.choice(("2", "4", "6", "8")), {v}),
                    ("A safety telephone call takes place {value} weeks after the final dose.",),
                ),
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(
                        r, lambda q: q.choice(("12", "24", "26", "36", "48", "52")), {v}
                    ),
                    (
                        "In protocol version 1.0 the follow-up period was {value} weeks; it was extended by amendment.",
                    ),
                ),
            ),
        ),
    ),
)


# --- municipal council minutes -----------------------------------------------------------


def _day(d: datetime.date) -> str:
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


def _later(rng: random.Random, ents: Ents, days: tuple[int, int] = (7, 35)) -> str:
    """A date a few weeks after the meeting's."""
    return _day(ents["held"] + datetime.timedelta(days=rng.randint(*days)))


def _minutes_entities(rng: random.Random) -> Ents:
    held = datetime.date(rng.randint(2019, 2024), rng.randint(1, 12), rng.randint(1, 28))
    people = rng.sample([f"{f} {la}" for f in FIRST[:24] for la in LAST[:24]], 12)
    return {
        "municipality": f"{rng.choice(('Town', 'City', 'Township', 'Municipality'))} of {rng.choice(PLACE)}",
        "held": held,
        "meeting_date": _day(held),
        "councillor": people[:7],
        "clerk": people[7],
        "treasurer": people[8],
        "reserve": people[9:],  # names for chairs and distractors, never in the filler
        "street": [
            f"{rng.choice(PLACE)} {s}" for s in ("Road", "Street", "Avenue", "Lane", "Drive")
        ],
    }


def _chair(rng: random.Random, ents: Ents) -> str:
    return ents["reserve"][0]


MINUTES = DomainSpec(
    name="minutes",
    entities=_minutes_entities,
    opening=(
        "# {municipality}: Minutes of the Regular Meeting of Council",
        "Held on {meeting_date} in the Council Chambers, Municipal Offices.",
        "Members present: Councillors {councillor}, {councillor}, {councillor} and {councillor}. "
        "Staff present: {clerk}, Municipal Clerk, and {treasurer}, Treasurer.",
    ),
    closing=(
        "# Adjournment",
        "Moved by Councillor {councillor}, seconded by Councillor {councillor}, that the "
        "meeting adjourn at {time}. Carried.",
        "Certified a true copy of the minutes by {clerk}, Municipal Clerk.",
    ),
    sections=(
        "Call to Order",
        "Adoption of the Agenda",
        "Declarations of Pecuniary Interest",
        "Adoption of Previous Minutes",
        "Delegations",
        "Public Question Period",
        "Consent Agenda",
        "Reports of Committees",
        "Planning and Development",
        "Finance and Administration",
        "Public Works",
        "Parks and Recreation",
        "Fire and Emergency Services",
        "By-laws",
        "Correspondence",
        "Notices of Motion",
        "New Business",
        "Closed Session",
        "Confirmatory By-law",
    ),
    sentences=(
        "Moved by Councillor {councillor}, seconded by Councillor {councillor}, that the {report_type} be received for information.",
        "The motion was carried on a vote of {votes}.",
        "Councillor {councillor} asked staff to report back on {topic} at a future meeting.",
        "The Director of {dept} presented a report on {topic}, noting that {finding}.",
        "A delegation from the {group} addressed Council regarding {topic}.",
        "Staff confirmed that the project remains within its approved contract value of {money}.",
        "Council directed staff to prepare a by-law to amend the {bylaw} in respect of {topic}.",
        "Residents raised concerns about {concern} on {street}.",
        "The Treasurer, {treasurer}, advised that the levy increase would amount to {levy_pct} for an average household.",
        "The tender for {project} was awarded to {company} in the amount of {money}.",
        "Councillor {councillor} declared a pecuniary interest in item {item} and did not take part in the discussion.",
        "The Clerk read correspondence from the {org} concerning {topic}.",
        "Council recessed at {time} and reconvened shortly afterwards.",
        "Staff were directed to install {traffic} at the intersection of {street} and {street}.",
        "The {committee} recommended approval of the grant application to the {fund}.",
        "A recorded vote was requested by Councillor {councillor}.",
        "Discussion focused on the cost of {project} and the timing of the work.",
        "The minutes of the meeting held on {date} were adopted as circulated.",
        "Council received {num} written submissions on the proposed {plan}.",
        "The Fire Chief reported {num} emergency responses in the previous month, including {incident}.",
        "The Director of Public Works noted that {num} kilometres of road resurfacing had been completed this season.",
        "Council agreed to defer the item pending further information from the {org}.",
        "The application for a minor variance at {num3} {street} was approved subject to conditions.",
        "Members of the public were reminded that comments on {topic} may be submitted to the Clerk in writing.",
        "Councillor {councillor} thanked the volunteers of the {group} for their work this year.",
        "Staff will hold an open house on {topic} at the {venue}.",
        "Councillor {councillor} asked whether {concern} could be addressed in the next budget cycle.",
        "The Clerk, {clerk}, confirmed that notice of the public meeting had been given as required.",
        "Council endorsed the {plan} in principle, subject to further public consultation.",
        "The by-law to {bylaw_purpose} was given three readings and passed.",
    ),
    bullets=(
        ("The consent agenda comprised the following items:", "report_type"),
        ("Correspondence received for information:", "correspondence"),
        ("Staff identified the following priorities for the coming season:", "project"),
    ),
    tables=(
        (("Item", "Moved by", "Result"), ("{item}", "{councillor}", "{result}")),
        (("Project", "Contractor", "Amount"), ("{project}", "{company}", "{money}")),
    ),
    slots={
        "report_type": (
            "report of the Planning Committee",
            "monthly building permit report",
            "Treasurer's quarterly statement",
            "report of the Heritage Advisory Committee",
            "library board minutes",
            "fire department activity report",
        ),
        "levy_pct": ("1.9%", "2.4%", "2.9%", "3.2%", "3.8%", "4.5%"),
        "votes": ("5 to 2", "6 to 1", "4 to 3", "7 to 0"),
        "topic": (
            "the downtown parking strategy",
            "winter road maintenance",
            "the community centre expansion",
            "short-term rental licensing",
            "the stormwater management plan",
            "tree canopy protection",
            "speed limits in school zones",
            "the splash pad at the central park",
        ),
        "dept": ("Planning", "Public Works", "Finance", "Community Services", "Engineering"),
        "finding": (
            "costs had risen since the original estimate",
            "public feedback had been largely positive",
            "a provincial grant may cover part of the cost",
            "further study was recommended",
            "the work could be completed before winter",
        ),
        "group": (
            "Riverside Residents' Association",
            "Chamber of Commerce",
            "Historical Society",
            "Youth Soccer Club",
            "Seniors' Advisory Group",
            "Cycling Coalition",
        ),
        "bylaw": (
            "zoning by-law",
            "traffic and parking by-law",
            "noise by-law",
            "fees and charges by-law",
            "property standards by-law",
        ),
        "concern": (
            "speeding",
            "flooding in the spring",
            "the condition of the sidewalks",
            "noise from construction",
            "illegal dumping",
            "the lack of street lighting",
        ),
        "project": (
            "the reconstruction of the main street",
            "the water treatment plant upgrade",
            "a new salt storage dome",
            "the library roof replacement",
            "the arena ice plant",
            "the trail extension",
        ),
        "item": ("7.1", "7.2", "8.3", "9.1", "10.4", "11.2"),
        "org": (
            "Conservation Authority",
            "County Roads Department",
            "provincial Ministry of Transportation",
            "school board",
            "regional health unit",
        ),
        "traffic": ("an all-way stop", "pedestrian crossovers", "speed humps", "a flashing beacon"),
        "committee": (
            "Finance Committee",
            "Recreation Advisory Committee",
            "Accessibility Committee",
            "Environmental Advisory Committee",
        ),
        "fund": (
            "Community Infrastructure Fund",
            "Green Municipal Fund",
            "Rural Economic Development Program",
            "Active Transportation Fund",
        ),
        "plan": (
            "official plan amendment",
            "parks master plan",
            "transportation master plan",
            "asset management plan",
        ),
        "incident": (
            "two structure fires",
            "a hazardous materials call",
            "several motor vehicle collisions",
            "a water rescue",
        ),
        "venue": ("community centre", "public library", "arena hall", "municipal offices"),
        "bylaw_purpose": (
            "appoint a deputy fire chief",
            "set the fees for recreation programs",
            "regulate open-air burning",
            "designate a heritage property",
            "establish a reserve fund for fleet replacement",
        ),
        "correspondence": (
            "a letter from the Conservation Authority",
            "a resolution of a neighbouring township",
            "a petition from local residents",
            "a notice from the school board",
        ),
        "result": ("Carried", "Defeated", "Deferred", "Carried as amended"),
    },
    fields=(
        FieldSpec(
            "presiding_officer",
            "Name of the person who chaired (presided over) this council meeting, as written.",
            _chair,
            (
                "Mayor {value} presided over the meeting and called it to order at {time}.",
                "The meeting was chaired by Mayor {value}, who welcomed the members of the public in attendance.",
            ),
            (
                Distractor(
                    "other_entity",
                    lambda r, e, v: e["reserve"][1],
                    (
                        "Deputy Mayor {value} chaired the closed session held earlier that afternoon.",
                        "Councillor {value} was elected chair of the Finance Committee for the coming year.",
                    ),
                ),
                Distractor(
                    "superseded",
                    lambda r, e, v: e["reserve"][2],
                    ("The previous meeting had been chaired by Acting Mayor {value}.",),
                ),
            ),
        ),
        FieldSpec(
            "approved_budget",
            "Total amount of the budget council approved at this meeting, as written (e.g. $12,840,000).",
            lambda r, e: money(r, 2_000_000, 95_000_000, 10_000),
            (
                "Council approved the final operating budget in the amount of {value}.",
                "Moved and carried that the municipal budget for the coming year be adopted at a total of {value}.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: near_miss(r, v),
                    (
                        "The draft budget tabled at the previous meeting proposed total spending of {value}.",
                    ),
                ),
                Distractor(
                    "near_miss",
                    lambda r, e, v: near_miss(r, v),
                    (
                        "The ten-year capital plan, received for information only, totals {value}.",
                        "The budget requested by the library board was {value}.",
                    ),
                ),
            ),
        ),
        FieldSpec(
            "next_meeting_date",
            "Date of the next regular council meeting, as written (e.g. March 14, 2024).",
            lambda r, e: _later(r, e, (14, 28)),
            (
                "The next regular meeting of Council will be held on {value} at 7:00 p.m. in the Council Chambers.",
                "Council will next meet in regular session on {value}.",
            ),
            (
                Distractor(
                    "superseded",
                    lambda r, e, v: distinct(r, lambda q: _later(q, e, (7, 35)), {v}),
                    ("The special meeting originally scheduled for {value} has been cancelled.",),
                ),
                Distractor(
                    "other_entity",
                    lambda r, e, v: distinct(r, lambda q: _later(q, e, (7, 60)), {v}),
                    (
                        "The public meeting on the official plan amendment will take place on {value}.",
                        "The Finance Committee will next meet on {value}.",
                    ),
                ),
            ),
        ),
    ),
)

SPECS: dict[str, DomainSpec] = {s.name: s for s in (LEASE, REPORT, MANUAL, PROTOCOL, MINUTES)}
