"""The hosted form in real headless Chromium with JavaScript off: fill, submit, read the reference.

Needs `/usr/bin/chromium` (Debian package `chromium`) and the Python package `playwright`; it
installs neither. Without them the test is skipped with the reason, except under CI=true, where
that is a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connectors.webform.normalize import REFERENCE
from intake.blobs import FileBlobStore
from intake.testing import CHROMIUM, CHROMIUM_ARGS, require_browser

from .conftest import RecordingPublisher, build_app, make_settings

SCREENSHOTS = Path("/tmp")
PHONE = {"width": 390, "height": 844}



async def test_a_person_submits_the_form_without_javascript(
        aiohttp_server: Any, publisher: RecordingPublisher, blobs: FileBlobStore) -> None:
    async_playwright = require_browser()
    server = await aiohttp_server(build_app(make_settings(), publisher, blobs))
    url = f"http://127.0.0.1:{server.port}/forms/contact"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                    args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(java_script_enabled=False, viewport=PHONE,
                                                device_scale_factor=2, is_mobile=True,
                                                has_touch=True, locale="zh-CN")
            page = await context.new_page()
            await page.goto(url)
            assert await page.title() == "联系我们 · Contact us"
            # Labels are bound: filling by label text finds the inputs.
            await page.get_by_label("姓名 Name").fill("李雷")
            await page.get_by_label("电子邮箱 Email").fill("li.lei@example")  # no TLD
            await page.get_by_label("手机号码 Phone").fill("139 1099 8888")
            await page.get_by_label("类别 Topic").select_option("after_sales")
            await page.get_by_label("留言 Message").fill("耳机左声道没有声音。")
            await page.get_by_label("我同意", exact=False).check()
            await page.screenshot(path=str(SCREENSHOTS / "webform-phone.png"), full_page=True)
            # One column on a phone: nothing wider than the screen.
            for selector in ("#f-name", "#f-message", "#f-topic", "button[type=submit]"):
                box = await page.locator(selector).bounding_box()
                assert box is not None and box["x"] >= 0
                assert box["x"] + box["width"] <= PHONE["width"], selector

            await page.get_by_role("button", name="提交 Send").click()
            await page.wait_for_load_state()
            summary = page.locator(".error-summary")
            assert await summary.is_visible()
            assert "电子邮箱 Email" in await summary.inner_text()
            assert await page.get_by_label("姓名 Name").input_value() == "李雷"  # kept
            await page.screenshot(path=str(SCREENSHOTS / "webform-phone-errors.png"),
                                  full_page=True)
            assert publisher.messages == []

            await page.get_by_label("电子邮箱 Email").fill("li.lei@example.com")
            await page.get_by_label("附件 Attachment").set_input_files(
                files=[{"name": "收据.pdf", "mimeType": "application/pdf",
                        "buffer": b"%PDF-1.4\n%receipt\n"}])
            await page.get_by_role("button", name="提交 Send").click()
            await page.wait_for_url("**/forms/contact/thanks?ref=*")
            reference = (await page.locator("#reference").inner_text()).strip()
            await page.screenshot(path=str(SCREENSHOTS / "webform-phone-thanks.png"),
                                  full_page=True)
        finally:
            await browser.close()
    assert REFERENCE.match(reference)
    [message] = publisher.messages
    assert message.channel_data and message.channel_data["reference"] == reference
    assert [i.value for i in message.sender.identities] == ["li.lei@example.com",
                                                            "+8613910998888"]
    assert [a.filename for a in message.attachments] == ["收据.pdf"]
    assert await blobs.get(message.attachments[0].blob) == b"%PDF-1.4\n%receipt\n"
    assert message.flags == []  # a person never fills the honeypot
