import asyncio, json
import httpx, pytest
from tests.browser.conftest import AppPhone
from tests.browser.test_authenticator_app import start, relying_party  # noqa: F401
from tests.support.device import ref_of

@pytest.mark.parametrize("n", range(60))
async def test_scratch(phone: AppPhone, enrol_url: str, relying_party: httpx.AsyncClient, n: int) -> None:
    await phone.enrol(enrol_url)
    worker = next(w for w in phone.context.service_workers)
    await worker.evaluate("""() => { self.__log = []; self.addEventListener("push", (e) => { self.__log.push("push " + (e.data ? e.data.text().slice(0, 20) : null)); });
  const orig = self.registration.showNotification.bind(self.registration);
  self.registration.showNotification = async (...a) => { self.__log.push("show called"); try { const r = await orig(...a); self.__log.push("show ok"); return r; } catch (e) { self.__log.push("show err " + e); throw e; } };
  self.addEventListener("unhandledrejection", (e) => self.__log.push("unhandled " + e.reason));
  self.addEventListener("error", (e) => self.__log.push("error " + e.message));
}""")
    auth_req_id = await start(relying_party)
    ref = ref_of(auth_req_id)
    await phone.receive("prompt", ref)
    for i in range(100):
        shown = await phone.notifications()
        if shown:
            break
        await asyncio.sleep(0.1)
    log = await worker.evaluate("async () => [self.__log, (await self.registration.getNotifications()).length, self.registration.active && self.registration.active.state]")
    print("RESULT", n, bool(shown), i, log)
    assert shown
