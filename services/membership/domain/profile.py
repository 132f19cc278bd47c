"""Member registration checks, collected per field, and the age bands analytics reports by."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

EMAIL_MAX_LENGTH = 254
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128
PASSWORD_MIN_CLASSES = 3
NAME_MAX_LENGTH = 100
MIN_BIRTH_YEAR = 1900
MIN_AGE = 13
GENDERS = frozenset({"female", "male", "other"})
AGE_BANDS = ("under-18", "18-24", "25-34", "35-44", "45-54", "55+")

# ISO 3166-2:CN, the 34 province-level divisions.
REGIONS: Mapping[str, str] = MappingProxyType({
    "CN-AH": "Anhui", "CN-BJ": "Beijing", "CN-CQ": "Chongqing", "CN-FJ": "Fujian",
    "CN-GD": "Guangdong", "CN-GS": "Gansu", "CN-GX": "Guangxi", "CN-GZ": "Guizhou",
    "CN-HA": "Henan", "CN-HB": "Hubei", "CN-HE": "Hebei", "CN-HI": "Hainan",
    "CN-HK": "Hong Kong", "CN-HL": "Heilongjiang", "CN-HN": "Hunan", "CN-JL": "Jilin",
    "CN-JS": "Jiangsu", "CN-JX": "Jiangxi", "CN-LN": "Liaoning", "CN-MO": "Macao",
    "CN-NM": "Nei Mongol", "CN-NX": "Ningxia", "CN-QH": "Qinghai", "CN-SC": "Sichuan",
    "CN-SD": "Shandong", "CN-SH": "Shanghai", "CN-SN": "Shaanxi", "CN-SX": "Shanxi",
    "CN-TJ": "Tianjin", "CN-TW": "Taiwan", "CN-XJ": "Xinjiang", "CN-XZ": "Xizang",
    "CN-YN": "Yunnan", "CN-ZJ": "Zhejiang",
})  # fmt: skip

# Deliberately plain ASCII addresses (dot-atom local part, LDH domain labels): what
# the mail relay accepts; internationalised addresses are out of scope for now.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = r"(?:[a-z]{2,63}|xn--[a-z0-9-]+)"
_EMAIL = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+{_TLD}")
_REGION_MESSAGE = "region must be an ISO 3166-2:CN province-level code, e.g. CN-BJ"
_GENDER_MESSAGE = f"gender must be one of {', '.join(sorted(GENDERS))}"
# A local part this short ("li@...") would forbid too many passwords to be worth checking.
_MIN_LOCAL_PART_CHECKED = 3


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    name: str
    birth_year: int
    region: str
    gender: str | None = None


def normalize_email(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().lower()


def normalize_registration(form: Registration) -> Registration:
    """Trim and case-fold what may be; the password is kept exactly as typed."""
    return replace(
        form,
        email=normalize_email(form.email),
        name=unicodedata.normalize("NFC", form.name).strip(),
        region=form.region.strip().upper(),
        gender=None if form.gender is None else form.gender.strip().lower(),
    )


def validate_registration(form: Registration, *, current_year: int) -> list[FieldError]:
    """Every problem with the (normalized) form, so a client can show them all at once."""
    f = normalize_registration(form)
    problems = {
        "email": _email_problems(f.email),
        "password": _password_problems(f.password, f.email),
        "name": _name_problems(f.name),
        "birth_year": _birth_year_problems(f.birth_year, current_year),
        "region": [] if f.region in REGIONS else [_REGION_MESSAGE],
        "gender": [] if f.gender is None or f.gender in GENDERS else [_GENDER_MESSAGE],
    }
    return [FieldError(field, message) for field, msgs in problems.items() for message in msgs]


def age_band(birth_year: int, current_year: int) -> str:
    """The reporting band for a member's age this year (birthdays are not collected)."""
    age = current_year - birth_year
    if age < 0:
        raise ValueError(f"birth year {birth_year} is after {current_year}")
    for upper, band in zip((18, 25, 35, 45, 55), AGE_BANDS, strict=False):
        if age < upper:
            return band
    return AGE_BANDS[-1]


def _email_problems(email: str) -> list[str]:
    if not email:
        return ["email is required"]
    if len(email) > EMAIL_MAX_LENGTH:
        return [f"email must be at most {EMAIL_MAX_LENGTH} characters"]
    match = _EMAIL.fullmatch(email)
    if match is None or len(match["local"]) > 64:
        return ["email is not a valid address"]
    return []


def _password_problems(password: str, email: str) -> list[str]:
    problems = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(f"password must be at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        problems.append(f"password must be at most {PASSWORD_MAX_LENGTH} characters")
    classes = (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    if sum(any(map(test, password)) for test in classes) < PASSWORD_MIN_CLASSES:
        problems.append("password must mix at least 3 of: lowercase, uppercase, digits, symbols")
    local = email.partition("@")[0].partition("+")[0]
    if len(local) >= _MIN_LOCAL_PART_CHECKED and local in password.lower():
        problems.append("password must not contain the name part of the email address")
    return problems


def _name_problems(name: str) -> list[str]:
    if not name:
        return ["name is required"]
    if len(name) > NAME_MAX_LENGTH:
        return [f"name must be at most {NAME_MAX_LENGTH} characters"]
    if any(unicodedata.category(c) == "Cc" for c in name):
        return ["name must not contain control characters"]
    return []


def _birth_year_problems(birth_year: int, current_year: int) -> list[str]:
    youngest = current_year - MIN_AGE
    if birth_year > youngest:
        return [f"members must be at least {MIN_AGE}: birth_year must be {youngest} or earlier"]
    if birth_year < MIN_BIRTH_YEAR:
        return [f"birth_year must be {MIN_BIRTH_YEAR} or later"]
    return []
