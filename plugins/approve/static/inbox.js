// pgwarden's approver inbox. The server renders every request (escaped); this script only
// fetches that HTML again with the approver's token, and sends approve / deny to the JSON API.
// It never builds HTML from data: text it shows goes through textContent.
"use strict";
(() => {
  const KEY = "pgwarden-approver-token";
  const REFRESH_MS = 5000;
  const api = document.body.dataset.api;
  const status = document.getElementById("status");
  const signin = document.getElementById("signin");

  const token = () => sessionStorage.getItem(KEY);
  const headers = (extra) => {
    const h = Object.assign({}, extra);
    const t = token();
    if (t) h.Authorization = "Bearer " + t; // else an authenticating proxy in front adds its own
    return h;
  };
  const say = (text, bad) => {
    status.textContent = text;
    status.className = bad ? "bad" : "";
  };
  const signedIn = () => document.querySelector("#requests .who") !== null;

  // `polled`: the timer's refresh, which must not replace the list under an approver who began
  // writing a reason while it was on its way (the list is checked again once it has come).
  async function refresh(polled = false) {
    let answer;
    try {
      answer = await fetch("requests", { headers: headers(), cache: "no-store" });
    } catch (e) {
      say("The inbox cannot be reached: " + e.message, true);
      return;
    }
    const text = await answer.text();
    if (!answer.ok) {
      if (answer.status === 401 || answer.status === 403) signin.hidden = false;
      say(text.trim(), true);
      return;
    }
    if (polled && busy()) return;
    const fresh = new DOMParser().parseFromString(text, "text/html").getElementById("requests");
    document.getElementById("requests").replaceWith(document.adoptNode(fresh));
    signin.hidden = token() === null;
    if (status.className === "bad") say(""); // an error is over; news of a decision stays
  }

  // Refresh unless the approver is writing a reason (a new list would drop it).
  function busy() {
    const active = document.activeElement;
    if (active && active.closest("form.decide")) return true;
    return [...document.querySelectorAll("form.decide textarea")].some((t) => t.value.trim() !== "");
  }
  setInterval(() => {
    if ((token() !== null || signedIn()) && !busy()) refresh(true);
  }, REFRESH_MS);

  async function decide(form, action) {
    const id = form.closest("article.request").dataset.id;
    const reason = form.elements.reason.value.trim();
    const out = form.querySelector("output");
    if (action === "deny" && reason === "") {
      out.textContent = "A reason is required to deny.";
      form.elements.reason.focus();
      return;
    }
    const body = { reason: reason === "" ? null : reason };
    if (form.elements.grant && form.elements.grant.value === "window") {
      body.grant = { kind: "window", minutes: Number(form.elements.minutes.value) };
    }
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    out.textContent = action === "approve" ? "Approving…" : "Denying…";
    let answer;
    try {
      answer = await fetch(api + encodeURIComponent(id) + "/" + action, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      out.textContent = "Not sent: " + e.message;
      buttons.forEach((b) => (b.disabled = false));
      return;
    }
    let data = {};
    try {
      data = await answer.json();
    } catch (e) {
      data = {};
    }
    if (!answer.ok) {
      out.textContent = data.error || "Refused (" + answer.status + ")";
      buttons.forEach((b) => (b.disabled = false));
      return;
    }
    form.elements.reason.value = "";
    const state = (data.request && data.request.state) || data.state || action + "d";
    say("Request " + id + ": " + state + ".");
    await refresh();
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    event.preventDefault();
    if (form === signin) {
      const value = form.elements.token.value.trim();
      form.elements.token.value = "";
      if (value === "") return;
      sessionStorage.setItem(KEY, value);
      refresh();
    } else if (form.classList.contains("decide")) {
      const action = event.submitter ? event.submitter.value : "";
      if (action === "approve" || action === "deny") decide(form, action);
    }
  });

  signin.querySelector("button.forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    say("The token is forgotten.");
    refresh();
  });

  if (token() !== null) refresh();
  else if (!signedIn()) signin.hidden = false;
})();
