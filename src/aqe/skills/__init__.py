"""Agent skills: a folder per skill, read with progressive disclosure, checked and run.

:mod:`aqe.skills.library` finds and reads the library, :mod:`aqe.skills.check`
validates it, :mod:`aqe.skills.examples` runs every example, :mod:`aqe.skills.search`
searches it with the pattern library's engine and :mod:`aqe.skills.install` copies it
where an agent runtime reads skills. Only the library module is imported here, so
light commands stay light.
"""

from aqe.skills.library import LEVELS, Skill, find_skill, load_library, skills_root

__all__ = ["LEVELS", "Skill", "find_skill", "load_library", "skills_root"]
