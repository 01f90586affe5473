"""Solvers behind one interface, and a registry by name.

scoresde.solvers.available()            the registered names
scoresde.solvers.get("pc", snr=0.16)    a configured solver
scoresde.solvers.register(name, cls)    add your own (a ``Solver`` subclass or factory)
scoresde.solvers.unregister(name)       and remove it
"""

from scoresde.solvers.adaptive_sde import GottaGoFast
from scoresde.solvers.ancestral import DPMSolverPP2SAncestral, EulerAncestral
from scoresde.solvers.base import AffineSolver, Run, Solver
from scoresde.solvers.ddim import DDIM
from scoresde.solvers.deis import DEIS
from scoresde.solvers.dpm_solver import DPMSolverMultistep, DPMSolverPP
from scoresde.solvers.dpm_solver_singlestep import DPMSolverPPSinglestep, DPMSolverSinglestep
from scoresde.solvers.edm import EDMHeun
from scoresde.solvers.ipndm import IPNDM
from scoresde.solvers.langevin import AnnealedLangevin, LangevinCorrector, PredictorCorrector
from scoresde.solvers.probability_flow import ODERK45, ODEDopri5, ODEEuler, ODEHeun
from scoresde.solvers.registry import available, get, register, unregister
from scoresde.solvers.restart import Restart
from scoresde.solvers.reverse_sde import DDPMAncestral, EulerMaruyama, ReverseDiffusion
from scoresde.solvers.sde_dpm_solver import SDEDPMSolverPP
from scoresde.solvers.torchsde_backend import TorchsdeSolver
from scoresde.solvers.unipc import UniPC

for _cls in (
    EulerMaruyama,
    ReverseDiffusion,
    DDPMAncestral,
    ODEEuler,
    ODEHeun,
    ODERK45,
    ODEDopri5,
    PredictorCorrector,
    AnnealedLangevin,
    TorchsdeSolver,
    DDIM,
    DPMSolverMultistep,
    DPMSolverPP,
    DPMSolverSinglestep,
    SDEDPMSolverPP,
    EDMHeun,
    GottaGoFast,
    EulerAncestral,
    DPMSolverPP2SAncestral,
    DPMSolverPPSinglestep,
    UniPC,
    DEIS,
    Restart,
    IPNDM,
):
    register(_cls.name, _cls)

__all__ = [
    "DDIM",
    "DEIS",
    "IPNDM",
    "ODERK45",
    "AffineSolver",
    "AnnealedLangevin",
    "DDPMAncestral",
    "DPMSolverMultistep",
    "DPMSolverPP",
    "DPMSolverPP2SAncestral",
    "DPMSolverPPSinglestep",
    "DPMSolverSinglestep",
    "EDMHeun",
    "EulerAncestral",
    "EulerMaruyama",
    "GottaGoFast",
    "LangevinCorrector",
    "ODEDopri5",
    "ODEEuler",
    "ODEHeun",
    "PredictorCorrector",
    "Restart",
    "ReverseDiffusion",
    "Run",
    "SDEDPMSolverPP",
    "Solver",
    "TorchsdeSolver",
    "UniPC",
    "available",
    "get",
    "register",
    "unregister",
]
