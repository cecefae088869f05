// ESLint for the UI: typescript-eslint's strict, type-checked rules over every TypeScript
// file (the type checker's knowledge finds floating promises, unsafe `any` and needless
// conditions that syntax alone cannot). Formatting is Prettier's, not ESLint's.
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/"] },
  {
    files: ["**/*.ts"],
    extends: [tseslint.configs.strictTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Numbers print as people expect in text; what the rule still catches (objects,
      // `undefined`, `null` ending up in a sentence) is what it is here for.
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
    },
  },
);
