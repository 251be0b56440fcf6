"""The SDK's FAQ search over 2,000 articles (issue 14's target: p99 ≤ 10 ms).

The benchmark's gateway reads its FAQ from `<data dir>/faq` (a copy of `deploy/faq`, see
`bench/gateway.py`); this scenario writes 2,000 generated articles beside the shipped ones
(Chinese and English, titles, tags and bodies drawn from one vocabulary so that terms are
shared between articles as in a real help centre), waits until the connector's rescan makes
them searchable, then searches:
1. one query at a time (the latency a customer sees, load generator included);
2. 16 in flight, searches per second.

Off the default run: `make bench SCENARIO=sdk-faq` (`SCENARIO=sdk` runs it with the others).
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse

import orjson

from bench.result import Context, Result, Scenario
from bench.stats import summarize

APP = "demo-app"
ARTICLES = 2_000
IN_FLIGHT = 16
TOPICS = ["退货", "退款", "换货", "发票", "物流", "快递", "会员", "积分", "优惠券", "支付",
          "密码", "账号", "地址", "订单", "售后", "保修", "安装", "尺码", "预售", "门店"]
WORDS = ["怎么", "申请", "多久", "到账", "需要", "提供", "凭证", "运费", "谁", "承担", "修改",
         "取消", "查询", "进度", "失败", "原因", "处理", "时间", "规则", "说明", "注意", "事项",
         "return", "refund", "invoice", "shipping", "member", "points", "coupon", "payment",
         "password", "account", "address", "order", "warranty", "size", "store", "delivery"]
BRANDS = ["小米", "华为", "海尔", "美的", "格力", "苏泊尔", "九阳", "格兰仕", "飞利浦", "戴森"]
KINDS = ["空调", "冰箱", "洗衣机", "电饭煲", "吸尘器", "手机", "耳机", "电视", "热水器", "净水器"]
QUERIES = ["退货", "怎么退款", "发票 抬头", "快递多久到", "会员积分规则", "优惠券 失败",
           "refund", "shipping time", "password reset", "修改地址", "戴森吸尘器 保修",
           "格力空调 安装", "订单 取消", "payment failed", "换货 运费 谁承担", "積分",
           "美的冰箱 预售", "华为手机 发票"]  # 積分: Traditional, folded to 积分


def article(index: int, rng: random.Random) -> str:
    """One help article on a product (100 of them) and a topic (20): terms shared as in a real
    help centre, where 退货 is in one article in twenty and a product name in one in a hundred."""
    product = rng.choice(BRANDS) + rng.choice(KINDS)
    topic, other = rng.sample(TOPICS, 2)
    body = " ".join(rng.choice(WORDS) + rng.choice(["", topic, product]) for _ in range(80))
    return (f"---\nid: bench-{index}\ntitle: {product}{topic}{rng.choice(WORDS)} {index}\n"
            f"tags: [{topic}, {other}]\n---\n\n# {product}{topic}\n\n{body}\n\n"
            f"## {other}\n\n{' '.join(rng.choices(WORDS, k=40))}\n")


class SdkFaq(Scenario):
    name = "sdk-faq"
    order = 176
    default = False

    async def run(self, ctx: Context) -> list[Result]:
        count = ctx.n(ARTICLES, 200)
        folder = ctx.gateway.faq_dir
        rng = random.Random(7)
        for index in range(count):
            (folder / f"bench-{index}.md").write_text(article(index, rng), encoding="utf-8")
        url = f"{ctx.gateway.url('sdk')}/sdk/v1/apps/{APP}/faq/search"

        async def search(query: str) -> tuple[float, int]:
            began = time.perf_counter()
            async with ctx.http.get(f"{url}?{urllib.parse.urlencode({'q': query})}") as answer:
                body = await answer.read()
            elapsed = (time.perf_counter() - began) * 1000
            return elapsed, len(orjson.loads(body)["items"]) if answer.status == 200 else -1

        began = time.perf_counter()
        marker = f"{count - 1}"
        while True:  # the rescan (every few seconds) indexes the new files
            async with ctx.http.get(f"{url}?{urllib.parse.urlencode({'q': marker})}") as answer:
                found = (await answer.json()).get("items", [])
            if any(item["id"] == f"bench-{count - 1}" for item in found):
                break
            if time.perf_counter() - began > 120:
                return [Result(scenario=self.name, messages=0, load=f"{count} articles",
                               throughput=None, ok=False,
                               failure="the new articles never became searchable")]
            await asyncio.sleep(0.5)
        indexed_s = time.perf_counter() - began
        ctx.log(f"sdk-faq: {count} articles searchable after {indexed_s:.1f} s")

        queries = ctx.n(2_000, 100)
        serial = [await search(QUERIES[i % len(QUERIES)]) for i in range(queries)]
        failed = sum(1 for _, hits in serial if hits < 0)
        latency = summarize([ms for ms, _ in serial])

        pending = iter(range(queries))
        timings: list[float] = []

        async def worker() -> None:
            for i in pending:
                ms, hits = await search(QUERIES[i % len(QUERIES)])
                timings.append(ms)
                if hits < 0:
                    nonlocal failed
                    failed += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        rate = round(queries / (time.perf_counter() - began), 1)
        ctx.log(f"sdk-faq: one at a time p50 {latency['p50']} ms, p99 {latency['p99']} ms; "
                f"{IN_FLIGHT} in flight {rate} searches/s (p99 {summarize(timings)['p99']} ms)")
        return [Result(
            scenario=self.name, messages=queries, load=f"{count} articles, one at a time",
            throughput=None, latency=latency, ok=failed == 0,
            failure=f"{failed} searches failed" if failed else None,
            extra={"measured": "GET /faq/search → answer, load generator included",
                   "articles": count, "indexed_s": round(indexed_s, 1),
                   "searches_per_s": rate, "in_flight": IN_FLIGHT,
                   "in_flight_latency": summarize(timings)})]


SCENARIOS = [SdkFaq()]
