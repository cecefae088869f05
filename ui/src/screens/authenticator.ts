// Replacing the authenticator app (a new phone): a full sign-in first, then the new
// secret as a QR code and a key to type, then a code from the new app to confirm. The
// secret lives in this section only; a lock wipes it with the rest of the page.
import { api, type AuthenticatorSetup } from "../api";
import { announce } from "../app";
import { clear, el, field } from "../dom";
import { withStepUp } from "./session";

/** The "Authenticator app" part of the security screen. */
export function authenticatorSection(): HTMLElement {
  const section = el("section", { "aria-labelledby": "authenticator-title" });
  idle(section);
  return section;
}

function idle(section: HTMLElement): void {
  clear(section);
  const start = el(
    "button",
    { type: "button", class: "secondary", id: "change-authenticator" },
    "Set up a new authenticator",
  );
  start.addEventListener("click", () => {
    void withStepUp(() => api.beginAuthenticatorChange(), "Setting up a new authenticator").then((setup) => {
      if (setup) {
        setupView(section, setup, () => {
          idle(section);
        });
      }
    });
  });
  section.append(
    el("h3", { id: "authenticator-title" }, "Authenticator app"),
    el(
      "p",
      {},
      "New phone? Set up a new authenticator app here. Your current one keeps working until you confirm a code from the new one.",
    ),
    start,
  );
}

/** The QR code, the key to type instead, and the code that confirms; `done` when finished or cancelled. */
export function setupView(section: HTMLElement, setup: AuthenticatorSetup, done: () => void): void {
  clear(section);
  const code = el("input", {
    type: "text",
    id: "new-authenticator-code",
    name: "code",
    autocomplete: "one-time-code",
    inputmode: "numeric",
    pattern: "[0-9]{6}",
    maxlength: "6",
    required: true,
  });
  const cancel = el("button", { type: "button", class: "secondary" }, "Cancel");
  cancel.addEventListener("click", done);
  const form = el(
    "form",
    {},
    field("Code from the new authenticator app", code),
    el(
      "div",
      { class: "actions" },
      cancel,
      el("button", { type: "submit", class: "primary", id: "confirm-authenticator" }, "Confirm"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void withStepUp(
      () => api.confirmAuthenticator(code.value).then(() => true),
      "Confirming the new authenticator",
    ).then((ok) => {
      if (!ok) return; // The form stays as it was: nothing typed is lost.
      done();
      announce("Your new authenticator app is set up. Codes from the old one no longer work.");
    });
  });
  section.append(
    el("h3", { id: "authenticator-title" }, "Scan with your new authenticator app"),
    el("img", {
      class: "qr",
      width: "200",
      height: "200",
      src: `data:image/png;base64,${setup.qr_png_base64}`,
      alt: "QR code of your new authenticator secret. If you cannot scan it, type the key shown below.",
    }),
    el("p", {}, "Or type this key: ", el("code", { id: "setup-key" }, setup.setup_key)),
    el("p", { class: "muted" }, "Keep this key to yourself: anyone with it can make your codes."),
    form,
  );
  code.focus();
}
