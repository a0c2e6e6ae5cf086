"""Small read queries shared by the pipeline and the commands."""

import peewee

from connector.store.models import Ticket


def next_ticket_number():
    return (Ticket.select(peewee.fn.MAX(Ticket.number)).scalar() or 0) + 1
