// The demo shop's sign-in: asks the connector's demo endpoint (loopback only, demo apps only)
// for the user hash a real shop's backend would compute, then identifies the widget's user.
(function () {
  "use strict";
  const form = document.getElementById("sign-in");
  const app = document.querySelector("script[data-app-key]").dataset.appKey;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const userId = document.getElementById("user-id").value;
    const response = await fetch("/sdk/demo/sign", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ app, user_id: userId }),
    });
    const answer = await response.json();
    if (!response.ok) { document.getElementById("signed-in").textContent = answer.message; return; }
    window.IntakeWidget.identify({ userId, userHash: answer.user_hash });
    document.getElementById("signed-in").textContent = `已登录 ${userId}`;
  });
  document.getElementById("sign-out-button").addEventListener("click", () => {
    window.IntakeWidget.logout();
    document.getElementById("signed-in").textContent = "";
  });
})();
