"""The card-number scanner finds a planted number in a table and in log text, and ignores
hex hashes and ids that merely contain long digit runs."""

import logging

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from core.pan_scan import find_in_text, scan_database, scan_text


def test_the_scanner_finds_card_numbers_in_text_and_ignores_hashes_and_ids():
    assert list(find_in_text("paid with 4242 4242 4242 4242 today")) == ["424242******4242"]
    assert list(find_in_text('{"pan": "5555555555554444"}')) == ["555555******4444"]
    assert list(find_in_text("sha 9f4242424242424242ab")) == []
    assert list(find_in_text("pay_4242424242424242")) == []
    assert list(find_in_text("4242424242424241")) == []  # fails Luhn


@pytest.mark.django_db
@pytest.mark.planted_card_number
def test_the_scanner_finds_a_planted_number_in_a_table(merchant):
    assert scan_database() == []
    with connection.cursor() as cursor:
        cursor.execute("UPDATE core_merchant SET name = 'Card 4111 1111 1111 1111' WHERE id = %s",
                       [merchant.pk])
    hits = scan_database()
    assert [h.where for h in hits] == ["core_merchant"]
    with pytest.raises(CommandError, match="core_merchant"):
        call_command("pan_scan")


def test_the_log_scan_sees_what_the_formatter_would_write():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "card 4000056655665556", (), None)
    assert scan_text([record.getMessage()])
