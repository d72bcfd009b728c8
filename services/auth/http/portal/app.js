// The partner portal's 2FA pages: plain JavaScript, no build step, no inline code (CSP).
"use strict";

const state = { token: null, mfaToken: null, useRecovery: false, me: null, config: null, codes: [] };
const $ = (id) => document.getElementById(id);
const SECTIONS = ["login", "otp-step", "profile", "enable-password", "enable-scan", "enable-codes", "disable-step"];

function show(id, focus) {
  for (const name of SECTIONS) $(name).hidden = name !== id;
  $("error").textContent = "";
  const target = focus ? $(focus) : $(id).querySelector("input, button");
  if (target) target.focus();
}

function say(text) { $("status").textContent = text; }

function fail(problem) {
  let text = problem.title || "Something went wrong";
  if (problem.attempts_left !== undefined && problem.attempts_left !== null) {
    text += ` (${problem.attempts_left} attempts left)`;
  }
  if (problem.retry_after) text += ` Try again in ${problem.retry_after} seconds.`;
  $("error").textContent = text;
}

async function call(base, path, { method = "GET", body, auth = true } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(base + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return {};
  const data = await response.json().catch(() => ({ title: `HTTP ${response.status}` }));
  if (!response.ok) throw data;
  return data;
}

const auth = (path, options) => call("", path, options);
const enrolment = (path, options) => call(state.config.enrolment_url, path, options);

function codeField(inputId) {
  return $(inputId).value.replace(/\s+/g, "");
}

async function afterLogin(tokens) {
  state.token = tokens.access_token;
  state.mfaToken = null;
  await showProfile();
}

async function showProfile() {
  state.me = await auth("/v1/me");
  $("who").hidden = false;
  $("who").textContent = `Signed in as ${state.me.username}`;
  $("profile-username").textContent = state.me.username;
  $("profile-email").textContent = state.me.email;
  $("profile-2fa").textContent = state.me.twofa_enabled
    ? `On (${state.me.recovery_codes_left} recovery codes left)` : "Off";
  $("enable-2fa").hidden = state.me.twofa_enabled;
  $("disable-2fa").hidden = !state.me.twofa_enabled;
  for (const field of document.querySelectorAll(".needs-otp")) field.hidden = !state.me.twofa_enabled;
  show("profile", state.me.twofa_enabled ? "disable-2fa" : "enable-2fa");
}

function secondFactor(inputId) {
  const value = codeField(inputId);
  return value ? { otp: value } : {};
}

function bind(id, handler) {
  $(id).addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await handler(); } catch (problem) { fail(problem); }
  });
}

function click(id, handler) {
  $(id).addEventListener("click", async (event) => {
    event.preventDefault();
    try { await handler(); } catch (problem) { fail(problem); }
  });
}

bind("login-form", async () => {
  const result = await auth("/v1/login", {
    method: "POST", auth: false,
    body: { username: $("login-username").value, password: $("login-password").value },
  });
  $("login-password").value = "";
  if (result.mfa_required) {
    state.mfaToken = result.mfa_token;
    state.useRecovery = false;
    $("otp-label").textContent = "Code from your authenticator app";
    show("otp-step", "otp-code");
  } else {
    await afterLogin(result);
  }
});

click("use-recovery", async () => {
  state.useRecovery = true;
  $("otp-label").textContent = "Recovery code";
  $("otp-code").setAttribute("inputmode", "text");
  $("otp-code").removeAttribute("pattern");
  $("otp-code").setAttribute("maxlength", "32");
  $("otp-code").value = "";
  $("otp-code").focus();
});

bind("otp-form", async () => {
  const code = $("otp-code").value.trim();
  const body = state.useRecovery
    ? { mfa_token: state.mfaToken, recovery_code: code }
    : { mfa_token: state.mfaToken, otp: code.replace(/\s+/g, "") };
  const tokens = await auth("/v1/login/mfa", { method: "POST", auth: false, body });
  $("otp-code").value = "";
  await afterLogin(tokens);
});

click("enable-2fa", async () => show("enable-password", "reauth-password"));

bind("reauth-form", async () => {
  const fresh = await auth("/v1/reauthenticate", {
    method: "POST", body: { password: $("reauth-password").value },
  });
  $("reauth-password").value = "";
  state.token = fresh.access_token;
  const started = await enrolment("/v1/2fa/enrolment", { method: "POST" });
  $("secret").textContent = started.secret;
  const image = await fetch(state.config.enrolment_url + started.qr_svg, {
    headers: { Authorization: `Bearer ${state.token}` },
  });
  if (!image.ok) throw await image.json();
  $("qr").src = URL.createObjectURL(await image.blob());
  show("enable-scan", "confirm-code");
});

bind("confirm-form", async () => {
  const result = await enrolment("/v1/2fa/enrolment/confirm", {
    method: "POST", body: { otp: codeField("confirm-code") },
  });
  $("confirm-code").value = "";
  $("secret").textContent = "";
  state.codes = result.recovery_codes;
  const list = $("codes");
  list.replaceChildren(...state.codes.map((code) => {
    const item = document.createElement("li");
    item.textContent = code;
    return item;
  }));
  show("enable-codes", "copy-codes");
});

click("copy-codes", async () => {
  await navigator.clipboard.writeText(state.codes.join("\n"));
  say("Recovery codes copied.");
});

click("download-codes", async () => {
  const blob = new Blob([state.codes.join("\n") + "\n"], { type: "text/plain" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "partner-portal-recovery-codes.txt";
  link.click();
  say("Recovery codes downloaded.");
});

click("close-codes", async () => {
  state.codes = [];
  $("codes").replaceChildren();
  say("Two-factor authentication is on.");
  await showProfile();
});

click("disable-2fa", async () => show("disable-step", "disable-code"));

bind("disable-form", async () => {
  await enrolment("/v1/2fa/disable", { method: "POST", body: { otp: codeField("disable-code") } });
  $("disable-code").value = "";
  say("Two-factor authentication is off.");
  await showProfile();
});

bind("password-form", async () => {
  await auth("/v1/account/password", {
    method: "POST",
    body: { current_password: $("pw-current").value, new_password: $("pw-new").value, ...secondFactor("pw-otp") },
  });
  for (const id of ["pw-current", "pw-new", "pw-otp"]) $(id).value = "";
  say("Password changed. Your other sessions were signed out.");
});

bind("email-form", async () => {
  await auth("/v1/account/email", {
    method: "POST",
    body: { current_password: $("email-current").value, email: $("email-new").value, ...secondFactor("email-otp") },
  });
  for (const id of ["email-current", "email-otp"]) $(id).value = "";
  say("Email changed.");
  await showProfile();
});

click("sign-out", async () => {
  await auth("/v1/logout", { method: "POST" });
  state.token = null;
  $("who").hidden = true;
  say("Signed out.");
  show("login", "login-username");
});

for (const button of document.querySelectorAll("button.cancel")) {
  button.addEventListener("click", () => showProfile().catch(fail));
}

fetch("/portal/config.json").then((r) => r.json()).then((config) => {
  state.config = config;
  show("login", "login-username");
});
