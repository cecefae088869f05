// Sign-in (password + authenticator code), the lock screen (presence, password fallback),
// and the step-up prompt before high-risk actions.
import { api, isCommandError, type SessionView } from "../api";
import { announce, refresh, show, showError } from "../app";
import { el, field } from "../dom";
import { minutes } from "../fhir";
import { lockMessage } from "../lock";

/** Why the account locked, where there is something to say (see `lockMessages`). */
function lockNote(session: SessionView): HTMLElement | null {
  const message = lockMessage(session);
  return message === null ? null : el("p", { class: "notice info", role: "status" }, message);
}

function input(type: string, name: string, autocomplete: string, extra: Record<string, string> = {}): HTMLInputElement {
  return el("input", { type, name, autocomplete, required: true, ...extra });
}

function codeInput(): HTMLInputElement {
  return input("text", "code", "one-time-code", { inputmode: "numeric", pattern: "[0-9]{6}", maxlength: "6" });
}

/** Sign-in: the first on this device, or again when the session asks for it. */
export function signInScreen(session: SessionView): void {
  const username = input("text", "username", "username");
  const password = input("password", "password", "current-password");
  const code = codeInput();
  const submit = el("button", { type: "submit", class: "primary" }, "Sign in");
  const form = el(
    "form",
    { class: "card narrow", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, session.state === "reauth-required" ? "Sign in again" : "Sign in to Carekeep"),
    session.state === "reauth-required"
      ? el(
          "p",
          {},
          "For your safety, Carekeep asks for your password and a code from your authenticator app every 12 hours.",
        )
      : el("p", {}, "Your records stay encrypted on this device and work offline after your first sign-in."),
    lockNote(session),
    field("Username", username),
    field("Password", password),
    field("Code from your authenticator app", code),
    submit,
    el("p", { class: "muted" }, `Server: ${session.server}`),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit.disabled = true;
    const [u, p, c] = [username.value, password.value, code.value];
    // The password leaves the page with this call and is not kept.
    password.value = "";
    code.value = "";
    api.signIn(u, p, c).then(
      () => refresh(),
      (e: unknown) => {
        submit.disabled = false;
        showError(e);
        (isCommandError(e) && e.message.toLowerCase().includes("code") ? code : password).focus();
      },
    );
  });
  show(form);
}

/** The lock screen: nothing of the records is on the page while it shows. */
export function lockScreen(session: SessionView): void {
  const password = input("password", "password", "current-password");
  const unlock = el("button", { type: "submit", class: "primary" }, "Unlock");
  const presence = el("button", { type: "button", class: "secondary" }, "Unlock with this device");
  const form = el(
    "form",
    { class: "card narrow lock", "aria-labelledby": "lock-title" },
    el("h1", { id: "lock-title" }, "Carekeep is locked"),
    el("p", {}, "Your records are encrypted while the app is locked."),
    lockNote(session),
    presence,
    el("p", { class: "or" }, "or"),
    field("Password", password),
    unlock,
    el("p", { class: "muted" }, `Locks after ${minutes(session.idle_lock_secs)} without use.`),
  );
  presence.addEventListener("click", () => {
    presence.disabled = true;
    api.unlockWithPresence().then(
      () => refresh(),
      (e: unknown) => {
        presence.disabled = false;
        showError(e);
        password.focus();
      },
    );
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    unlock.disabled = true;
    const p = password.value;
    password.value = "";
    api.unlockWithPassword(p).then(
      () => refresh(),
      (e: unknown) => {
        unlock.disabled = false;
        showError(e);
        password.focus();
      },
    );
  });
  show(form);
}

/** After a remote wipe or revocation: the device's copy is gone. */
export function wipedScreen(session: SessionView): void {
  // The sign-in screen first: showing a screen clears the banner, so the notice comes after.
  signInScreen(session);
  announce("This device's copy of the records was erased by your organisation. Sign in to start again.", "error");
}

/**
 * Runs a high-risk action; if the core asks for step-up, prompts for a full sign-in in a
 * modal dialog and tries once more.
 */
export async function withStepUp<T>(action: () => Promise<T>, what: string): Promise<T | undefined> {
  try {
    return await action();
  } catch (e) {
    if (!isCommandError(e) || e.next !== "step-up") {
      showError(e);
      return undefined;
    }
  }
  const confirmed = await stepUpDialog(what);
  if (!confirmed) return undefined;
  try {
    return await action();
  } catch (e) {
    showError(e);
    return undefined;
  }
}

function stepUpDialog(what: string): Promise<boolean> {
  return new Promise((resolve) => {
    const username = input("text", "username", "username");
    const password = input("password", "password", "current-password");
    const code = codeInput();
    const error = el("p", { class: "notice error", role: "alert", hidden: true });
    const cancel = el("button", { type: "button", class: "secondary" }, "Cancel");
    const form = el(
      "form",
      { method: "dialog" },
      el("h2", { id: "stepup-title" }, "Confirm it's you"),
      el("p", {}, `${what} needs your password and a fresh code.`),
      field("Username", username),
      field("Password", password),
      field("Code from your authenticator app", code),
      error,
      el("div", { class: "actions" }, cancel, el("button", { type: "submit", class: "primary" }, "Confirm")),
    );
    const dialog = el("dialog", { "aria-labelledby": "stepup-title" }, form);
    const done = (ok: boolean) => {
      dialog.close();
      dialog.remove();
      resolve(ok);
    };
    cancel.addEventListener("click", () => {
      done(false);
    });
    dialog.addEventListener("cancel", () => {
      done(false);
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const [u, p, c] = [username.value, password.value, code.value];
      password.value = "";
      code.value = "";
      api.signIn(u, p, c).then(
        () => {
          done(true);
        },
        (e: unknown) => {
          error.hidden = false;
          error.textContent = isCommandError(e) ? e.message : String(e);
        },
      );
    });
    document.body.append(dialog);
    dialog.showModal();
    username.focus();
  });
}
